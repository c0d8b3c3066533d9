"""backprop's Textual terminal app. The screens land with the TUI issue; the engine never imports this."""

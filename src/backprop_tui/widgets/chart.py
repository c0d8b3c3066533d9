"""A line chart drawn with braille dots: two series (training and eval loss) in any terminal."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Braille dot bits for (column, row) inside one 2×4 character cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class LineChart(Widget):
    """Plots series of (x, y) points scaled to the widget; y-axis labels on the left."""

    DEFAULT_CSS = "LineChart { height: 10; }"
    series: reactive[dict[str, list[tuple[float, float]]]] = reactive(dict, always_update=True)

    def __init__(self, styles_by_series: dict[str, str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.styles_by_series = styles_by_series
        self.series = {name: [] for name in styles_by_series}

    def add_point(self, name: str, x: float, y: float) -> None:
        self.series[name].append((x, y))
        self.series = self.series

    def clear(self) -> None:
        self.series = {name: [] for name in self.styles_by_series}

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        points = [p for values in self.series.values() for p in values]
        if not points or width < 12 or height < 2:
            return Text("waiting for the first step…", style="dim")
        label_width = 8
        plot_width = width - label_width
        low, high = min(y for _, y in points), max(y for _, y in points)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        x_max = max(max(x for x, _ in points), 1)
        cells = [[0] * plot_width for _ in range(height)]
        owner = [[""] * plot_width for _ in range(height)]

        def to_dots(x: float, y: float) -> tuple[int, int]:
            dot_x = min(int(x / x_max * (plot_width * 2 - 1)), plot_width * 2 - 1)
            dot_y = min(int((high - y) / (high - low) * (height * 4 - 1)), height * 4 - 1)
            return dot_x, dot_y

        for name, values in self.series.items():
            dots = [to_dots(x, y) for x, y in values]
            for (x0, y0), (x1, y1) in zip(dots, dots[1:] + dots[-1:]):
                steps = max(abs(x1 - x0), abs(y1 - y0), 1)
                for i in range(steps + 1):  # a straight segment between consecutive points
                    dot_x, dot_y = x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps
                    cells[dot_y // 4][dot_x // 2] |= _DOTS[dot_x % 2][dot_y % 4]
                    owner[dot_y // 4][dot_x // 2] = name
        text = Text(no_wrap=True, overflow="crop")
        for row in range(height):
            label = (
                f"{high:7.3f} " if row == 0 else f"{low:7.3f} " if row == height - 1 else " " * label_width
            )
            text.append(label, style="dim")
            for column in range(plot_width):
                bits = cells[row][column]
                char = chr(0x2800 + bits) if bits else " "
                text.append(char, style=self.styles_by_series.get(owner[row][column], ""))
            if row < height - 1:
                text.append("\n")
        return text

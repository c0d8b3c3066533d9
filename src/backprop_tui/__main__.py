"""``python -m backprop_tui``: the same as the ``backprop`` console script."""

import sys

from .launch import main

sys.exit(main())

"""The ``backprop`` console script: the engine's command line, plus the app for the commands that open it
(no subcommand on a terminal, ``watch``, ``attach``). The engine never imports this package, so the app's
entry point lives here and hands everything else to ``backprop_engine.cli``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from backprop_engine.cli import main as engine_main

    return engine_main(argv, open_app=open_app)


def open_app(args: argparse.Namespace) -> int:
    from backprop_engine.rundir import RunDir

    from .app import BackpropApp

    if args.command is None:
        BackpropApp().run()
        return 0
    run = RunDir.open(args.run_dir)
    BackpropApp(watch_run=run.path, read_only=args.read_only).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

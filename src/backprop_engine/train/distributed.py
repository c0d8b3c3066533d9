"""Several processes, one per device, under ``torchrun`` or ``accelerate launch``: PyTorch DDP.

Every process runs the same ``backprop train``; the launcher gives each its RANK, WORLD_SIZE and LOCAL_RANK.
Each micro-batch of ``batch_size × world_size`` rows from the seeded stream is dealt across the ranks, so
together they train on exactly the rows one process with that batch size would (``batch_size`` is per
process). The loss is normalised by the trained tokens of all ranks and DDP averages the gradients, so a step
is the single-process step on the union of the rows, up to the order of float reductions. Rank 0 alone
writes the run directory and reports events; the other ranks train in silence.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from ..errors import BackpropError, ConfigError, TrainingError

# Rank 0 prepares the data while the others wait, and a hot GPU may pause its rank for gpu_cool_timeout_s
# (15 min by default): both outlast NCCL's default 10-minute limit on a collective.
COLLECTIVE_TIMEOUT = timedelta(hours=1)

T = TypeVar("T")
Number = TypeVar("Number", int, float)


@dataclass
class Distributed:
    """This process's place in the process group; the defaults describe a run on one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    steps: int = 0  # this rank's own optimizer steps and trained tokens, gathered by rank 0 at the end
    tokens: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def for_run(self) -> Distributed:
        """A copy that counts this rank's steps and tokens from zero."""
        return replace(self, steps=0, tokens=0)

    def recorded(self) -> dict[str, str]:
        """What the run's config.toml keeps of the launch (its [resolved] section); nothing for one process."""
        return {"processes": str(self.world_size)} if self.enabled else {}

    def check_resume(self, config_path: Path) -> None:
        """A run resumes on as many processes as it started on: they decide each step's rows and their order."""
        from ..tomlcompat import tomllib

        started = int(
            tomllib.loads(config_path.read_text(encoding="utf-8")).get("resolved", {}).get("processes", "1")
        )
        if started != self.world_size:
            run = config_path.parent
            launch = f"torchrun --nproc_per_node {started} $(which backprop)" if started > 1 else "backprop"
            raise ConfigError(
                f"{run}: trained on {started} process(es), cannot resume on {self.world_size}",
                f"resume it as it started: `{launch} train --resume {run}`",
            )

    def main_first(self, prepare: Callable[[], T]) -> T:
        """``prepare()`` on rank 0, then on the other ranks, which find the caches it filled (data, built-in
        models). A user error on rank 0 is raised on every rank, so all of them stop with its message."""
        if not self.enabled:
            return prepare()
        if not self.is_main:
            _raise_if(self._from_main(None))
            return prepare()
        try:
            result = prepare()
        except BackpropError as error:
            self._from_main(error)
            raise
        self._from_main(None)
        return result

    def main_only(self, write: Callable[[], T]) -> T:
        """``write()`` on rank 0 alone; every rank waits for it and gets its result (or its user error)."""
        if not self.enabled:
            return write()
        result, error = self._from_main(_attempt(write) if self.is_main else (None, None))
        _raise_if(error)
        return result

    def wrap(self, model, device: str):
        """The module that trains: DDP around ``model`` (it averages gradients across ranks), or ``model``."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.local_rank] if device == "cuda" else None)

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share of ``items``: every ``world_size``-th one, from its rank on."""
        return items[self.rank :: self.world_size] if self.enabled else items

    def unshard(self, rows, count: int):
        """The inverse of :meth:`shard` for a tensor of this rank's per-item rows: all ``count`` items' rows,
        in their order, on every rank (a collective; the values arrive exactly as computed)."""
        if not self.enabled:
            return rows
        import torch
        import torch.distributed as dist

        whole = torch.zeros(count, *rows.shape[1:], dtype=torch.float64, device=rows.device)
        whole[self.rank :: self.world_size] = rows.double()
        dist.all_reduce(whole, op=dist.ReduceOp.SUM)
        return whole.to(rows.dtype)

    def local_batch(self, rows: list, collate: Callable):
        """This rank's rows of one micro-batch, collated. A rank left without rows (the short micro-batch at
        an epoch's end) gets one row with nothing to train on: DDP needs the same passes on every rank."""
        if not self.enabled:
            return collate(rows)
        mine = self.shard(rows)
        if mine:
            return collate(mine)
        from ..data.tokenize import IGNORE_INDEX

        blank = collate(rows[:1])
        blank.labels.fill_(IGNORE_INDEX)
        blank.real_tokens = 0
        return blank

    def accumulating(self, model, last: bool):
        """Around a backward pass: gradients stay local until the step's last one, where DDP averages them."""
        return model.no_sync() if self.enabled and not last else contextlib.nullcontext()

    def total(self, value: Number) -> Number:
        """``value`` summed over all ranks (ints stay exact up to 2⁵³)."""
        if not self.enabled:
            return value
        return type(value)(self.all_reduce([float(value)], "sum")[0])

    def step_totals(self, loss: float, tokens: int) -> tuple[float, int]:
        """This rank's share of a step's loss and its tokens → the whole step's, counted for this rank too."""
        if not self.enabled:
            return loss, tokens
        self.steps += 1
        self.tokens += tokens
        return self.total(loss), self.total(tokens)

    def agreeing(self, control):
        """The run's control as every rank must see it (see :class:`AgreedControl`)."""
        return AgreedControl(control, self) if self.enabled else control

    def agree(self, control) -> None:
        if self.enabled:
            control.agree()

    def out_of_memory(self, rows: int) -> None:
        """The back-off re-cuts one process's micro-batches; across ranks it would break DDP's lock-step."""
        if self.enabled:
            raise TrainingError(
                f"out of memory on rank {self.rank} at micro-batch {rows}",
                "lower --batch-size (or raise --grad-accum) for a multi-process run",
            )

    def report(self, bus) -> None:
        """Rank 0 reports every rank's own steps and tokens (a collective: every rank calls it)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        tallies: list = [None] * self.world_size
        dist.all_gather_object(tallies, (self.steps, self.tokens))
        from ..events import RanksFinished

        bus.emit(
            RanksFinished(backend=self.backend, steps=[s for s, _ in tallies], tokens=[t for _, t in tallies])
        )

    def _from_main(self, value):
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce(self, values: list[float], op: str) -> list[float]:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor.tolist()


ONE_PROCESS = Distributed()  # the default: a plain single-process run (it keeps no counts)


class AgreedControl:
    """A :class:`TrainingControl` that every rank reads alike: a stop or checkpoint request made on any rank
    (Ctrl+C, a hot GPU) counts on all of them from the same step, so their collectives stay in lock-step.
    Pausing stays per process."""

    def __init__(self, control, dist: Distributed) -> None:
        self.control, self.dist = control, dist
        self.stop_requested = False
        self._checkpoint = False

    def agree(self) -> None:
        local = [float(self.control.stop_requested), float(self.control.take_checkpoint_request())]
        stop, checkpoint = self.dist.all_reduce(local, "max")
        self.stop_requested = self.stop_requested or bool(stop)
        self._checkpoint = self._checkpoint or bool(checkpoint)

    def take_checkpoint_request(self) -> bool:
        taken, self._checkpoint = self._checkpoint, False
        return taken

    def __getattr__(self, name: str):  # pause, resume, stop, request_checkpoint, paused, wait_until_running
        return getattr(self.control, name)


def launched() -> Distributed:
    """Join the process group that torchrun / accelerate launch set up (once per process); one process
    when WORLD_SIZE is absent or 1."""
    for sharding in ("fsdp", "deepspeed"):  # accelerate launch --use_fsdp / --use_deepspeed
        if os.environ.get(f"ACCELERATE_USE_{sharding.upper()}", "").lower() in ("1", "true"):
            raise ConfigError(
                f"accelerate launch --use_{sharding}: backprop does not shard the model, it trains with DDP",
                "drop the option (every process then holds the whole model); see README, Multi-GPU",
            )
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # from here on, "cuda" is this rank's own device
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=COLLECTIVE_TIMEOUT)
        atexit.register(_tear_down)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def _tear_down() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _attempt(action: Callable[[], T]) -> tuple[T | None, BackpropError | None]:
    try:
        return action(), None
    except BackpropError as error:
        return None, error


def _raise_if(error: BackpropError | None) -> None:
    if error is not None:
        raise error

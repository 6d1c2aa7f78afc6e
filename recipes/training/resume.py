"""Exact resume: a checkpoint taken mid-epoch continues the uninterrupted run's loss curve.

`ExactResume` (a stateful Lightning callback, added by `AudioVLMLightningModule.configure_callbacks`, so every
run has it) records, per training batch, where the data stood: the epoch, the batches consumed in it and, per
data worker, the raw-sample positions of its last two batches (``batch["stream_position"]``). Its checkpoint
state holds that data position plus every rank's global RNG states and VLAT sampler state. On resume it puts
the RNG states back before the first batch and tells the data module where to start
(`AudioShardDataModule.resume_at`); `resume_plan` turns the record into per-worker raw positions, which the
workers pass over without decoding them.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

logger = logging.getLogger(__name__)


# ============================================================================================ stream record
def record_stream_position(stream: dict, position: Sequence[int]) -> None:
    """Add a consumed batch's ``stream_position`` (worker, raw samples) to a `resume_plan` record."""
    worker, consumed = int(position[0]), int(position[1])
    stream.setdefault("batches", {})
    stream.setdefault("positions", {})
    stream["batches"][worker] = stream["batches"].get(worker, 0) + 1
    stream["positions"][worker] = [stream["positions"].get(worker, [0, 0])[1], consumed]


def resume_plan(batches: int, stream: Mapping[str, Any] | None, num_workers: int) -> tuple[dict[int, int], int] | None:
    """Where each worker resumes after ``batches`` consumed batches of an epoch, from the training loop's
    record ``stream`` (``{"batches": {worker: batches consumed}, "positions": {worker: [raw samples after its
    previous batch, after its latest]}}``): ``({worker: raw samples to pass over}, batches to drop)``, or
    ``None`` when the record does not describe this loader (other worker count, a worker that ran dry).

    A ``DataLoader`` takes batches from its workers in turn, and a new one starts again at worker 0. After
    n = r * W + m batches, workers 0..m-1 have given r + 1 and the others r. So every worker is put back
    where it stood after r batches and the first m batches of the pass are dropped: the next batch then
    comes from worker m, as in the uninterrupted run, at the cost of decoding m < W batches.
    """
    if batches == 0:
        return {}, 0
    if stream is None:
        return None
    workers = max(1, num_workers)  # 0 workers: the main process is the one worker
    counts = {int(w): int(n) for w, n in stream.get("batches", {}).items()}
    positions = {int(w): [int(p) for p in pair] for w, pair in stream.get("positions", {}).items()}
    rounds, extra = divmod(batches, workers)
    expected = {w: rounds + (1 if w < extra else 0) for w in range(workers)}
    if {w: n for w, n in counts.items() if n} != {w: n for w, n in expected.items() if n}:
        return None
    plan = {}
    for w in range(workers):
        if rounds == 0:
            plan[w] = 0
        elif w not in positions:
            return None
        else:
            plan[w] = positions[w][0] if w < extra else positions[w][1]
    return plan, extra


# ============================================================================================ RNG states
def rng_state() -> dict[str, Any]:
    """Global RNG states in types that ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list outside torch.distributed)."""
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def count_as_first_batch(trainer) -> None:
    """Make Lightning count the batch it is starting as the first of its epoch (called at the first batch after a
    resume at an epoch's start). From a checkpoint taken at the last batch of an epoch Lightning goes on with the
    next epoch, but with a loader of unknown length (ours is iterable) it keeps the finished epoch's batch count:
    the new epoch's first batch counted as batch n + 1, and with ``accumulate_grad_batches`` the optimizer steps
    fell on other micro-batches than in the uninterrupted run (the final weights differed)."""
    progress = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
    current = getattr(progress, "current", None)
    if current is None or current.ready <= 1:  # counted right (e.g. a checkpoint taken at the epoch's end)
        return
    shift = current.ready - 1  # ready was raised for this batch; started/processed/completed are not yet
    current.ready, current.started = 1, current.started - shift
    current.processed, current.completed = current.processed - shift, current.completed - shift


# ============================================================================================ callback
class ExactResume(pl.Callback):
    """The resume bookkeeping of a training run (see the module docstring). The module it trains may hold a
    ``vlat_sampler`` (``state_dict``/``load_state_dict``); its state is saved and restored per rank."""

    def __init__(self):
        self.position = (0, 0)  # (epoch, batches consumed in it) as a checkpoint taken now should record it
        self.stream: dict = {}  # the epoch's consumed batches per data worker and their stream positions
        self._epoch_batches = 0
        self._pending_rng: dict | None = None
        self._resumed_at_epoch_start = False
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # (Lightning does not call this hook when it resumes mid-epoch: the restored position stands.)
        self._epoch_batches = 0
        self.stream = {}
        self.position = (trainer.current_epoch, 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending_rng is not None:  # first batch after a resume: continue the saved RNG streams
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        if self._resumed_at_epoch_start:
            self._resumed_at_epoch_start = False
            count_as_first_batch(trainer)
        # Data position for checkpoints taken after this batch (checkpoint callbacks save at on_train_batch_end,
        # hence here). After the epoch's last batch the stream is exhausted: resume at the start of the next
        # epoch (Lightning continues there with the iterator it made at restart).
        self._epoch_batches += 1
        if isinstance(batch, dict) and batch.get("stream_position") is not None:
            record_stream_position(self.stream, batch["stream_position"])
        progress = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
        if progress is not None and progress.is_last_batch:
            self.position = (trainer.current_epoch + 1, 0)
        else:
            self.position = (trainer.current_epoch, self._epoch_batches)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.position = (trainer.current_epoch + 1, 0)  # a checkpoint taken now resumes at the next epoch's start

    def _sampler(self):
        return getattr(self._module, "vlat_sampler", None) if self._module is not None else None

    def state_dict(self) -> dict[str, Any]:
        sampler = self._sampler()
        per_rank = all_gather(  # every rank takes part (Lightning dumps a checkpoint on every rank)
            {
                "rng": rng_state(),
                "vlat": sampler.state_dict() if sampler is not None else None,
                "stream": copy.deepcopy(self.stream) if self.position[1] else {},
            }
        )
        return {
            "data_position": {"epoch": int(self.position[0]), "batches": int(self.position[1])},
            "data_workers": self._data_workers(),
            "per_rank": per_rank,
        }

    def _data_workers(self) -> int | None:
        """The data module's ``num_workers`` (None: no data module that says)."""
        n = getattr(getattr(self._trainer, "datamodule", None), "num_workers", None)
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    def _check_same_workers(self, saved: int | None) -> None:
        """Mid-epoch, the batches left depend on the worker count (a DataLoader takes batches from its workers in
        turn, each reading its own shards): another count would train some clips twice and some never."""
        current = self._data_workers()
        if not self.position[1] or saved is None or current is None or max(1, saved) == max(1, current):
            return  # 0 workers (the main process) reads as 1 worker does
        raise ValueError(
            f"the checkpoint was taken {self.position[1]} batches into epoch {self.position[0]} with "
            f"data.num_workers={saved}; this run has data.num_workers={current}. The rest of that epoch cannot be "
            f"reproduced with another worker count (some clips would be trained twice, some never): resume with "
            f"--data.num_workers {saved} (a checkpoint taken at an epoch's end may change it)."
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        trainer = self._trainer
        per_rank = state_dict.get("per_rank") or []
        rank = trainer.global_rank if trainer is not None else 0
        same_ranks = len(per_rank) == (trainer.world_size if trainer is not None else 1)
        mine: dict = {}
        if per_rank:
            if not same_ranks:
                logger.warning(
                    "checkpoint was written by %d ranks; RNG/VLAT states of rank 0 are reused", len(per_rank)
                )
            mine = per_rank[rank] if rank < len(per_rank) else per_rank[0]
            self._pending_rng = mine["rng"]
            sampler = self._sampler()
            if sampler is not None and mine.get("vlat") is not None:
                sampler.load_state_dict(mine["vlat"])
        position = state_dict.get("data_position") or {"epoch": 0, "batches": 0}
        self.position = (int(position["epoch"]), int(position["batches"]))
        self._epoch_batches = self.position[1]
        self._resumed_at_epoch_start = self.position[1] == 0
        # another rank count splits the shards differently: its stream positions mean nothing here
        self.stream = copy.deepcopy(mine.get("stream") or {}) if same_ranks else {}
        self._check_same_workers(state_dict.get("data_workers"))
        self._resume_data()

    def _resume_data(self) -> None:
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "resume_at"):
            datamodule.resume_at(*self.position, stream=self.stream or None)
        elif self.position[1]:
            logger.warning(
                "resuming mid-epoch (%d batches into epoch %d) without a data module that can fast-forward: "
                "the data order will differ from an uninterrupted run",
                self.position[1],
                self.position[0],
            )

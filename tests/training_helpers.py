"""Shared pieces of the training tests (tests/test_training_*.py): tiny shards, a trainer factory, recorders.

`RankRecorder` is also used by the 2-process DDP test through the CLI (``--trainer.callbacks``), so it must be
importable as ``tests.training_helpers.RankRecorder`` from the repository root.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

# 3 s encoder windows and 80 mel bins: the synthetic clips are < 3 s, and log-mel stays cheap on CPU.
TINY = {"max_source_positions": 150, "num_mel_bins": 80}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP spinning under
    contention made 20 steps take 20-70 s instead of ~1 s. Import this fixture into a test module to use it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_shards(root: Path, num: int = 16, seed: int = 0, maxcount: int = 4) -> dict:
    """Synthetic notes shards; returns {"glob", "keys"}."""
    from recipes.synthetic import make_notes_dataset

    ds = make_notes_dataset(root, num, seed=seed, maxcount=maxcount)
    return {"glob": str(Path(root) / "shards" / "*.tar"), "keys": list(ds.keys), "shards": list(ds.shards)}


def datamodule(
    shards: str, batch_size: int = 4, shuffle_buffer: int = 6, seed: int = 0, num_workers: int = 0, **kwargs
):
    from recipes.datamodule import AudioShardDataModule

    return AudioShardDataModule(
        train_shards=shards,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        **kwargs,
    )


def trainer(max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )
    defaults.update(kwargs)
    return pl.Trainer(max_steps=max_steps, callbacks=list(callbacks), **defaults)


class StepRecorder(pl.Callback):
    """Per optimizer step: loss, sample keys, and (with VLAT) a digest of the sampler state after the step."""

    def __init__(self):
        self.losses: list[float] = []
        self.keys: list[list[str]] = []
        self.vlat: list[str] = []
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.keys.append(list(batch["keys"]))
        self.steps.append(int(trainer.global_step))
        sampler = getattr(pl_module, "vlat_sampler", None)
        if sampler is not None:
            self.vlat.append(hashlib.sha1(sampler.generator.get_state().numpy().tobytes()).hexdigest())


def trainable_state(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


class RankRecorder(pl.Callback):
    """Writes ``out_dir/rank<r>.json`` (sample keys per step) and ``out_dir/rank<r>.pt`` (trainable tensors
    at the start and at the end of training) for every rank."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.keys: list[list[str]] = []
        self.losses: list[float] = []
        self.initial: dict | None = None

    def on_train_start(self, trainer, pl_module):
        self.initial = {k: v.cpu() for k, v in trainable_state(pl_module).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.keys.append(list(batch["keys"]))
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        (self.out_dir / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": trainer.world_size,
                    "keys": self.keys,
                    "losses": self.losses,
                    "global_step": trainer.global_step,
                }
            )
        )
        final = {k: v.cpu() for k, v in trainable_state(pl_module).items()}
        torch.save({"initial": self.initial, "final": final}, self.out_dir / f"rank{rank}.pt")

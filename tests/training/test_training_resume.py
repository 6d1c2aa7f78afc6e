"""Kill-and-resume: a run that crashes resumes from its last checkpoint and continues the SAME loss curve as an
uninterrupted run (same data order across epochs, same dropout RNG, same VLAT draws); checkpoints hold only the
trainable tensors; a checkpoint write that fails midway leaves the previous checkpoint intact."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from audio_adapter.testing import TINY_3S
from recipes.training.checkpointing import AtomicCheckpointIO
from recipes.training.module import AudioVLMLightningModule
from tests.helpers import (
    StepRecorder,
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)

N_STEPS = 10  # 16 samples / batch 4 = 4 batches per epoch: the runs cross two epoch boundaries


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("resume_data"), num=16, seed=4, maxcount=4)


def _module():
    # stage 2: LoRA dropout consumes the global RNG; VLAT draws a virtual length per sample
    return AudioVLMLightningModule(
        "tiny",
        tiny_overrides=TINY_3S,
        stage=2,
        lr=5e-3,
        lora_dropout=0.1,
        vlat=True,
        vlat_strategy="dense",
        vlat_seed=5,
    )


def _dm(shards):
    return datamodule(shards["glob"], batch_size=4, shuffle_buffer=6, seed=11)


class Crash(pl.Callback):
    """Simulates a kill: raises before training step ``at_step + 1`` runs."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated kill")


@pytest.fixture(scope="module")
def uninterrupted(shards):
    pl.seed_everything(0)
    rec = StepRecorder()
    trainer(N_STEPS, [rec], plugins=[AtomicCheckpointIO()]).fit(_module(), _dm(shards))
    assert len(rec.losses) == N_STEPS
    assert len({k for keys in rec.keys for k in keys}) == 16
    return rec


@pytest.mark.parametrize(
    "every, crash_at",
    [
        (3, 7),  # last checkpoint after step 6: mid-epoch (2 of epoch 1's 4 batches); step 7 is lost and redone
        (4, 9),  # last checkpoint after step 8: the last batch of epoch 1 (resume at the start of epoch 2)
    ],
)
def test_resume_continues_the_same_loss_curve(shards, uninterrupted, tmp_path, every, crash_at):
    ckpt_dir = tmp_path / "ckpt"

    def checkpointing():
        return ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=every, save_last=True, save_top_k=1)

    pl.seed_everything(0)
    first = StepRecorder()
    tr = trainer(
        N_STEPS, [first, checkpointing(), Crash(crash_at)], enable_checkpointing=True, plugins=[AtomicCheckpointIO()]
    )
    with pytest.raises(RuntimeError, match="simulated kill"):
        tr.fit(_module(), _dm(shards))
    assert first.losses == uninterrupted.losses[:crash_at]  # same start, same seed
    last = ckpt_dir / "last.ckpt"
    assert last.is_file()
    saved_step = (crash_at // every) * every

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == saved_step
    keys = set(ckpt["state_dict"])
    assert keys and all(".lora_" in k or k.endswith("audio_projector.weight") for k in keys)  # trainable only
    # a mid-epoch checkpoint records where the consumed batches left the data stream (resumed without decoding)
    position = ckpt["callbacks"]["ExactResume"]["data_position"]
    stream = ckpt["callbacks"]["ExactResume"]["per_rank"][0]["stream"]
    assert (stream["batches"] == {0: position["batches"]}) if position["batches"] else stream == {}

    pl.seed_everything(123)  # a different global RNG at restart must not matter: it is restored
    resumed = StepRecorder()
    tr2 = trainer(N_STEPS, [resumed, checkpointing()], enable_checkpointing=True, plugins=[AtomicCheckpointIO()])
    tr2.fit(_module(), _dm(shards), ckpt_path=str(last))
    assert resumed.steps == list(range(saved_step + 1, N_STEPS + 1))
    assert resumed.keys == uninterrupted.keys[saved_step:]  # same data order, across the epoch boundary
    assert resumed.vlat == uninterrupted.vlat[saved_step:]  # same VLAT draws
    expected = uninterrupted.losses[saved_step:]
    assert max(abs(a - b) for a, b in zip(resumed.losses, expected)) <= 1e-6, (resumed.losses, expected)


def test_atomic_checkpoint_write_failure_keeps_previous(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    old = {"state_dict": {"w": torch.arange(4.0)}, "global_step": 1}
    io.save_checkpoint(old, path)

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PARTIAL" * 100)  # some bytes reach the disk, then the "process dies"
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", failing_save)
    new = {"state_dict": {"w": torch.zeros(4)}, "global_step": 2}
    with pytest.raises(OSError, match="simulated"):
        io.save_checkpoint(new, path)
    monkeypatch.setattr(torch, "save", real_save)

    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 1 and torch.equal(loaded["state_dict"]["w"], old["state_dict"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind

    io.save_checkpoint(new, path)  # and a later good write replaces it
    assert io.load_checkpoint(path)["global_step"] == 2


def test_shard_loader_fast_forward_matches_uninterrupted_pass(shards):
    """`ShardLoader.set_epoch` + `skip_batches` reproduce the tail of an epoch (what a resume relies on)."""
    from audio_adapter.testing import tiny_processor

    dm = _dm(shards)
    dm.processor = tiny_processor(**TINY_3S)
    loader = dm.train_dataloader()
    epochs = [[b["keys"] for b in loader] for _ in range(2)]  # epochs 0 and 1 of one loader
    assert epochs[0] != epochs[1]
    dm.resume_at(1, 3)
    resumed = dm.train_dataloader()
    assert [b["keys"] for b in resumed] == epochs[1][3:]
    assert [b["keys"] for b in resumed] == [b["keys"] for b in loader]  # then continues with epoch 2


def test_resume_twice_within_one_epoch(shards, uninterrupted, tmp_path):
    """Killed mid-epoch, resumed, killed again later in the SAME epoch and resumed again: the second checkpoint
    must count the epoch's batches from the epoch's start, not from the first resume."""
    ckpt_dir = tmp_path / "ckpt"

    def run(crash_at: int | None, ckpt_path: str | None) -> StepRecorder:
        rec = StepRecorder()
        callbacks = [rec, ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=1)]
        if crash_at is not None:
            callbacks.append(Crash(crash_at))
        tr = trainer(N_STEPS, callbacks, enable_checkpointing=True, plugins=[AtomicCheckpointIO()])
        if crash_at is None:
            tr.fit(_module(), _dm(shards), ckpt_path=ckpt_path)
        else:
            with pytest.raises(RuntimeError, match="simulated kill"):
                tr.fit(_module(), _dm(shards), ckpt_path=ckpt_path)
        return rec

    pl.seed_everything(0)
    run(6, None)  # checkpoint after step 6: epoch 1, 2 of its 4 batches
    second = run(7, str(ckpt_dir / "last.ckpt"))  # resumes, runs step 7 (batch 3 of epoch 1), killed before 8
    assert second.keys == uninterrupted.keys[6:7]
    ckpt = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 7 and ckpt["callbacks"]["ExactResume"]["data_position"] == {"epoch": 1, "batches": 3}
    third = run(None, str(ckpt_dir / "last.ckpt"))
    assert third.keys == uninterrupted.keys[7:]
    expected = uninterrupted.losses[7:]
    assert max(abs(a - b) for a, b in zip(third.losses, expected)) <= 1e-6, (third.losses, expected)


def _fit_accumulating(shards, ckpt_dir, callbacks, ckpt_path=None, every: dict | None = None):
    """6 steps of accumulate_grad_batches 3 over 4-batch epochs (a step after micro-batches 3 and 4 of each);
    ``every``: when to checkpoint (default: every step)."""
    from tests.helpers import trainable_state

    module = _module()
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=1, **(every or {"every_n_train_steps": 1}))
    tr = trainer(6, [*callbacks, ckpt], enable_checkpointing=True, accumulate_grad_batches=3)
    tr.fit(module, _dm(shards), ckpt_path=ckpt_path)
    return trainable_state(module)


@pytest.fixture(scope="module")
def accumulating(shards, tmp_path_factory):
    pl.seed_everything(0)
    rec = StepRecorder()
    final = _fit_accumulating(shards, tmp_path_factory.mktemp("accumulating"), [rec])  # checkpoints: same RNG use
    assert rec.steps == [0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6]  # the global step after each micro-batch
    return rec, final


@pytest.mark.parametrize(
    "every, crash_at, saved",
    [
        (None, 3, 3),  # killed right after step 3's checkpoint: mid-epoch (micro-batch 3 of epoch 1's 4)
        (None, 4, 4),  # after step 4's: epoch 1's last micro-batch (before: the next steps one micro-batch off)
        ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, 5, 4),  # written at the end of epoch 1
    ],
)
def test_resume_with_gradient_accumulation_is_bit_exact(shards, accumulating, tmp_path, every, crash_at, saved):
    """Killed and resumed, a run with accumulate_grad_batches 3 takes the same micro-batches into the same steps
    and ends on the same weights, bit for bit (the issue: one micro-batch off, the projector differed)."""
    whole, expected = accumulating
    pl.seed_everything(0)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit_accumulating(shards, tmp_path, [Crash(crash_at)], every=every)
    assert torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == saved
    pl.seed_everything(123)
    resumed = StepRecorder()
    got = _fit_accumulating(shards, tmp_path, [resumed], ckpt_path=str(tmp_path / "last.ckpt"), every=every)
    done = whole.steps.index(saved) + 1  # micro-batches trained before that checkpoint
    assert resumed.keys == whole.keys[done:] and resumed.steps == whole.steps[done:]
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)

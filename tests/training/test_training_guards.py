"""Runs that would go on silently wrong are refused at set-up, naming both sides: a resume mid-epoch with another
``data.num_workers`` (clips trained twice or never), a resume on another base model (``model.tiny_seed``,
``model.vlm`` ...), and folders that overlap (a checkpoint folder that is also ``output_dir`` lost
``last.ckpt`` to the final write, and ``--ckpt_path last`` started over at step 0). A training shard with one
sample far above ``data.max_tokens`` trains on, the sample skipped and counted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from audio_adapter.testing import TINY_3S
from recipes.training.module import SPEC_FILE, AudioVLMLightningModule
from tests.helpers import (
    StepRecorder,
    datamodule,
    good_sample,
    long_prompt,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
    write_shard,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("guards_data"), num=8, seed=9, maxcount=4)


def _module(output_dir=None, **kwargs):
    return AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2, output_dir=output_dir, **kwargs)


def _fit(shards, run: Path, max_steps: int, ckpt_path=None, workers: int = 0, module=None, callbacks=()):
    """Stage 1, batch 2 (4 batches an epoch), a checkpoint every step in run/ckpt, outputs in run/out."""
    ckpt = ModelCheckpoint(dirpath=run / "ckpt", every_n_train_steps=1, save_last=True, save_top_k=1)
    tr = trainer(max_steps, [ckpt, *callbacks], enable_checkpointing=True)
    dm = datamodule(shards["glob"], batch_size=2, num_workers=workers)
    tr.fit(module or _module(str(run / "out")), dm, ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def first_run(shards, tmp_path_factory):
    """One step of a run with 0 data workers: its last.ckpt is 1 batch into epoch 0."""
    run = tmp_path_factory.mktemp("guards_run")
    _fit(shards, run, 1)
    assert (run / "ckpt" / "last.ckpt").is_file() and (run / "out" / SPEC_FILE).is_file()
    return run


def _no_step(rec: StepRecorder) -> None:
    assert rec.steps == [], "refused only after training"


# ------------------------------------------------------------------------------------------ resume mismatches
def test_resume_mid_epoch_with_other_worker_count_is_refused(shards, first_run, tmp_path):
    rec = StepRecorder()
    with pytest.raises(ValueError, match=r"data\.num_workers=0.*data\.num_workers=2.*--data\.num_workers 0"):
        _fit(shards, first_run, 2, ckpt_path=str(first_run / "ckpt" / "last.ckpt"), workers=2, callbacks=[rec])
    _no_step(rec)
    # 0 workers (the main process) and 1 worker read the same stream: that resume goes on
    run = shutil.copytree(first_run, tmp_path / "run")
    _fit(shards, run, 2, ckpt_path=str(run / "ckpt" / "last.ckpt"), workers=1, callbacks=[rec])
    assert rec.steps == [2]


def test_resume_on_another_base_model_is_refused(shards, first_run):
    rec = StepRecorder()
    other = _module(str(first_run / "out"), tiny_seed=1)
    with pytest.raises(ValueError, match=r"another base model \(tiny_seed: 0 there, 1 here\)"):
        _fit(shards, first_run, 2, ckpt_path=str(first_run / "ckpt" / "last.ckpt"), module=other, callbacks=[rec])
    _no_step(rec)


# ------------------------------------------------------------------------------------------ folders
def test_checkpoint_folder_that_is_the_output_dir_is_refused(shards, first_run, tmp_path):
    """The issue's case: the checkpoint folder and output_dir are one existing stage output."""
    both = shutil.copytree(first_run / "out", tmp_path / "stage_out")
    before = sorted(p.name for p in both.iterdir())
    rec = StepRecorder()
    ckpt = ModelCheckpoint(dirpath=both, every_n_train_steps=1, save_last=True)
    tr = trainer(2, [ckpt, rec], enable_checkpointing=True)
    with pytest.raises(ValueError, match=f"checkpoint folder {both} and output_dir {both} overlap"):
        tr.fit(_module(str(both)), datamodule(shards["glob"], batch_size=2))
    _no_step(rec)
    assert sorted(p.name for p in both.iterdir()) == before


def test_overlapping_folders_are_named(tmp_path):
    from recipes.training.run_files import check_separate_folders

    run = tmp_path / "run"
    out = run / "output"
    for args, names in [
        ((out, [out / "ckpt"]), ("checkpoint folder", out / "ckpt", "output_dir", out)),
        ((out / "x", [out]), ("checkpoint folder", out, "output_dir", out / "x")),
        ((out, [], out / "projector.safetensors"), ("output_dir", out, "init_from", out)),
        ((run / "s2", [run / "s1" / "ckpt"], run / "s1"), ("checkpoint folder", run / "s1" / "ckpt", "init_from")),
        ((run, [], None, [("default_root_dir", run)]), ("default_root_dir", run, "output_dir", run)),
        ((run, [], None, [("log folder", run / "logs")]), ("log folder", run / "logs", "output_dir", run)),
    ]:
        with pytest.raises(ValueError, match="overlap") as info:
            check_separate_folders(*args)
        assert all(str(n) in str(info.value) for n in names), (args, str(info.value))
    # the recipes' layout: output and checkpoints side by side in the default root / log folder
    check_separate_folders(out, [run / "checkpoints", "s3://bucket/ckpt"], tmp_path / "s1" / "output",
                           [("default_root_dir", run), ("log folder", run)])  # fmt: skip


# ------------------------------------------------------------------------------------------ long samples
def test_training_skips_a_sample_above_max_tokens(tmp_path):
    """One shard sample far above the default max_tokens (12 KB: 6,600 tokens of the tiny tokenizer; the issue's
    100 KB prompt failed the allocator, and every resume at the same sample) among good ones: the run trains
    its steps, the sample never in a batch, counted as too_long."""
    samples = [good_sample(33, i) for i in range(6)]
    samples.insert(2, good_sample(33, 7, key="runaway", prompt=long_prompt(12_000)))
    write_shard(tmp_path / "train-0.tar", samples)
    rec = StepRecorder()
    dm = datamodule(str(tmp_path / "train-0.tar"), batch_size=2, shuffle_buffer=0)
    trainer(3, [rec]).fit(_module(), dm)  # one epoch: 6 good samples in 3 steps
    assert rec.steps == [1, 2, 3] and "runaway" not in {k for keys in rec.keys for k in keys}
    assert dm.skip_counts == {"too_long": 1}

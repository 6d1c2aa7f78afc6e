"""Training runs that meet faults: a shard list that yields nothing stops within seconds (non-zero exit, the
shards and skip counts named); out-of-range settings are refused at start; the final outputs are written as a
whole directory, and a resume that finds them missing writes them; a restart cleans what a killed run left in
its checkpoint folder; an unwritable output folder is found before the first step; a damaged ``last.ckpt`` is
named and the previous good checkpoint is used."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from audio_adapter.testing import TINY_3S
from recipes.training.checkpointing import AtomicCheckpointIO
from recipes.training.module import SPEC_FILE, AudioVLMLightningModule
from recipes.training.projector_file import PROJECTOR_FILE, read_projector_file
from tests.helpers import (
    StepRecorder,
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)

REPO = Path(__file__).resolve().parents[2]
STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("faults_data"), num=8, seed=7, maxcount=4)


def _module(output_dir=None, **kwargs):
    return AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2, output_dir=output_dir, **kwargs)


def _fit(shards, run_dir: Path, max_steps: int = STEPS, ckpt_path=None, callbacks=()):
    """Stage 1 with checkpoints every 2 steps (save_top_k 1 + last) and outputs in run_dir/out."""
    ckpt = ModelCheckpoint(dirpath=run_dir / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=1)
    tr = trainer(max_steps, [ckpt, *callbacks], enable_checkpointing=True, plugins=[AtomicCheckpointIO()])
    tr.fit(_module(str(run_dir / "out")), datamodule(shards["glob"], batch_size=2), ckpt_path=ckpt_path)
    return tr


@pytest.fixture(scope="module")
def first_run(shards, tmp_path_factory):
    """A finished 4-step run: ckpt/{last.ckpt, epoch=0-step=4.ckpt} and out/."""
    run = tmp_path_factory.mktemp("first_run")
    _fit(shards, run)
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert (run / "out" / PROJECTOR_FILE).is_file() and (run / "out" / SPEC_FILE).is_file()
    return run


def _copy_run(first_run: Path, dest: Path) -> Path:
    shutil.copytree(first_run, dest)
    return dest


# ------------------------------------------------------------------------------------------ empty data
def test_cli_run_without_data_stops_within_seconds(tmp_path):
    """The issue's reproduction, verbatim: a mistyped explicit shard path. The run must end by itself with a
    non-zero exit and name the shard and the skip counts (before: Lightning started empty epoch after empty
    epoch until max_steps, i.e. forever)."""
    make_shards(tmp_path / "data" / "notes", num=2, seed=3)  # the recipe's validation shards exist
    (tmp_path / "data" / "notes" / "shards" / "train-000000.tar").rename(
        tmp_path / "data" / "notes" / "shards" / "val-000000.tar"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "scripts.train",
        "fit",
        "--config",
        str(REPO / "recipes/configs/tiny_stage1.yaml"),
        "--data.train_shards",
        "/nonexistent/train-000000.tar",
        "--trainer.max_steps",
        "5",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    elapsed = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "/nonexistent/train-000000.tar" in proc.stderr and "unreadable_shard=1" in proc.stderr, out[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # a message, not a stack dump
    assert elapsed < 60, elapsed


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", math.nan),
        ("lr", math.inf),
        ("weight_decay", -0.1),
        ("betas", (1.0, 0.999)),
        ("betas", (0.9, -0.1)),
        ("betas", (0.9,)),
        ("eps", 0.0),
        ("warmup_steps", -1),
        ("warmup_steps", 2.5),
        ("min_lr_ratio", 1.5),
        ("min_lr_ratio", -0.5),
        ("lora_r", 0),
        ("lora_alpha", 0),
        ("lora_dropout", 1.0),
        ("lora_dropout", -0.1),
        ("audio_pool_stride", 0),
        ("tiny_seed", 1.5),
        ("vlat_seed", 0.5),
    ],
)
def test_module_refuses_out_of_range_settings(name, value, monkeypatch):
    from recipes.training.model_spec import ModelSpec

    def no_build(self):  # the check must come before the (slow) model build
        raise AssertionError("model built before the settings were checked")

    monkeypatch.setattr(ModelSpec, "build", no_build)
    with pytest.raises(ValueError, match=name) as info:
        AudioVLMLightningModule("tiny", **{name: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_cli_refuses_batch_size_zero(tmp_path):
    from scripts.train import main as train_main

    with pytest.raises(ValueError, match=r"batch_size.*\b0\b"):
        train_main(
            [
                "--config",
                str(REPO / "recipes/configs/tiny_stage1.yaml"),
                "--data.batch_size=0",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger=false",
            ],
            run=False,
        )


# ------------------------------------------------------------------------------------------ outputs
def test_resume_writes_outputs_missing_after_a_kill(first_run, shards, tmp_path):
    """Killed while the outputs were written: only a temporary folder is left. The documented resume (already at
    max_steps) must write the outputs, and the leftover temporary folder goes."""
    run = _copy_run(first_run, tmp_path / "run")
    expected, _ = read_projector_file(run / "out")
    shutil.rmtree(run / "out")
    (run / ".out.tmp-12345").mkdir()
    (run / ".out.tmp-12345" / PROJECTOR_FILE).write_bytes(b"partial")
    _fit(shards, run, ckpt_path="last")
    got, _ = read_projector_file(run / "out")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert (run / "out" / SPEC_FILE).is_file()
    assert sorted(p.name for p in run.iterdir()) == ["ckpt", "out"]


def test_outputs_are_replaced_as_a_whole(first_run, tmp_path, monkeypatch):
    """A failure in the middle of `save_trained` leaves the previous outputs as they were (no mix of old and
    new files) and no partial folder; a first write that fails leaves no output folder at all."""
    module = _module()
    with torch.no_grad():
        module.audio_vlm.audio_projector.weight.add_(1.0)  # different from first_run's projector
    out = tmp_path / "out"
    shutil.copytree(first_run / "out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(module.processor, "save_pretrained", fail)
    with pytest.raises(OSError, match="simulated"):
        module.save_trained(out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    with pytest.raises(OSError, match="simulated"):
        module.save_trained(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    module.save_trained(out)  # and a good write replaces the old outputs
    assert (out / PROJECTOR_FILE).read_bytes() != before[PROJECTOR_FILE]


# ------------------------------------------------------------------------------------------ leftovers
def test_restart_cleans_killed_run_leftovers(shards, tmp_path):
    """A kill during a checkpoint write leaves a temporary file; a kill between writing the new step checkpoint
    and deleting the old one leaves a stale one behind save_top_k 1. The next start removes both."""
    run = tmp_path / "run"  # in place: a moved folder's restored checkpoint state describes another folder
    _fit(shards, run)
    ckpt = run / "ckpt"
    (ckpt / ".last.ckpt.k1ll3d.tmp").write_bytes(b"partial checkpoint")
    shutil.copy(ckpt / "epoch=0-step=4.ckpt", ckpt / "epoch=0-step=2.ckpt")
    (ckpt / "notes.txt").write_text("user file: never touched")
    _fit(shards, run, max_steps=6, ckpt_path="last")
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch=1-step=6.ckpt", "last.ckpt", "notes.txt"]


def test_unwritable_output_dir_is_found_before_training(shards, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    rec = StepRecorder()
    tr = trainer(STEPS, [rec])
    with pytest.raises(OSError, match=r"output_dir.*a_file"):
        tr.fit(_module(str(blocker / "out")), datamodule(shards["glob"], batch_size=2))
    assert rec.steps == []  # found at start, not after the training steps
    ckpt = ModelCheckpoint(dirpath=blocker / "ckpt", every_n_train_steps=2)
    tr = trainer(STEPS, [rec, ckpt], enable_checkpointing=True)
    with pytest.raises(OSError, match=r"checkpoint.*a_file"):
        tr.fit(_module(), datamodule(shards["glob"], batch_size=2))
    assert rec.steps == []


# ------------------------------------------------------------------------------------------ damaged checkpoint
def test_damaged_last_checkpoint_falls_back_to_previous_good_one(first_run, shards, tmp_path, caplog):
    run = _copy_run(first_run, tmp_path / "run")
    last = run / "ckpt" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # cut short (a copy interrupted, a full disk)
    rec = StepRecorder()
    with caplog.at_level("WARNING"):
        _fit(shards, run, max_steps=6, ckpt_path="last", callbacks=[rec])
    assert rec.steps == [5, 6]  # resumed from epoch=0-step=4.ckpt, the same step last.ckpt held
    assert any(str(last) in r.getMessage() and "epoch=0-step=4.ckpt" in r.getMessage() for r in caplog.records)
    # nothing to fall back to: the error names the file and what to do
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "last.ckpt").write_bytes(data[:1000])
    with pytest.raises(RuntimeError, match=r"lone/last\.ckpt.*damaged") as info:
        AtomicCheckpointIO().load_checkpoint(lone / "last.ckpt")
    assert "delete" in str(info.value).lower() or "ckpt_path" in str(info.value)

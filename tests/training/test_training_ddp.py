"""Two-process DDP on CPU (gloo) through the real CLI, stage 2 with VLAT: the ranks read disjoint samples and
finish with identical weights; rank 0 writes the stage outputs; a run resumed from a mid-epoch DDP checkpoint
continues every rank's data, loss curve and weights exactly (per-rank RNG and VLAT states are checkpointed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import make_shards

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
CKPT_STEP = 2


def _run_cli(
    tmp_path: Path,
    name: str,
    data_glob: str,
    ckpt_dir: Path | None,
    ckpt_path: str | None = None,
    strategy: str = "ddp",
) -> dict:
    record = tmp_path / name
    callbacks = [{"class_path": "tests.helpers.RankRecorder", "init_args": {"out_dir": str(record)}}]
    if ckpt_dir is not None:
        callbacks.append(
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(ckpt_dir), "every_n_train_steps": CKPT_STEP, "save_top_k": -1},
            }
        )
    override = {
        "trainer": {
            "accelerator": "cpu",
            "strategy": strategy,
            "devices": 2,
            "max_steps": STEPS,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": ckpt_dir is not None,
            "logger": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": callbacks,
        },
        "model": {"init_from": None, "lr": 1e-2, "vlat": True, "output_dir": str(tmp_path / f"out_{name}")},
        "data": {"train_shards": data_glob, "val_shards": None, "batch_size": 2, "num_workers": 0},
    }
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(override))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
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
        "recipes/configs/tiny_stage2.yaml",
        "--config",
        str(cfg),
    ]
    if ckpt_path is not None:
        cmd.append(f"--ckpt_path={ckpt_path}")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return {"ranks": ranks, "states": states}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted run with the real launcher (``ddp`` starts rank 1 as a new process), a checkpoint at
    step 2."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    data = make_shards(tmp_path / "data", num=16, seed=6, maxcount=4)  # 4 shards: 2 per rank, 4 batches each
    ckpt_dir = tmp_path / "ckpt"
    return {"tmp": tmp_path, "data": data, "ckpt_dir": ckpt_dir, **_run_cli(tmp_path, "full", data["glob"], ckpt_dir)}


def test_ddp_two_cpu_processes_stage2(full_run):
    data, ranks, states = full_run["data"], full_run["ranks"], full_run["states"]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [STEPS, STEPS]
    keys = [{k for step in r["keys"] for k in step} for r in ranks]
    assert all(len(r["keys"]) == STEPS for r in ranks)
    assert keys[0] and keys[1] and not (keys[0] & keys[1]), keys  # disjoint shares of the data
    assert (keys[0] | keys[1]) <= set(data["keys"])

    final0, final1 = states[0]["final"], states[1]["final"]
    assert final0.keys() == final1.keys() and any(".lora_" in k for k in final0)
    for name in final0:
        assert torch.equal(final0[name], final1[name]), f"ranks diverged on {name}"
    assert any(not torch.equal(states[0]["initial"][n], final0[n]) for n in final0), "nothing trained"
    out = full_run["tmp"] / "out_full"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "projector.safetensors").is_file()


def test_ddp_resume_from_a_mid_epoch_checkpoint(full_run):
    """Both ranks resume from the step-2 checkpoint and finish: same data, losses and weights. The ranks are
    forked here (``ddp_fork``: same per-rank code, no second interpreter start-up); what is restored is the
    checkpoint's per-rank state, whichever launcher started the ranks."""
    ranks, states = full_run["ranks"], full_run["states"]
    (ckpt,) = full_run["ckpt_dir"].glob(f"*step={CKPT_STEP}.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert len(saved["callbacks"]["ExactResume"]["per_rank"]) == 2  # RNG + VLAT state of both ranks
    resumed = _run_cli(
        full_run["tmp"], "resumed", full_run["data"]["glob"], None, ckpt_path=str(ckpt), strategy="ddp_fork"
    )
    for rank in range(2):
        a, b = ranks[rank], resumed["ranks"][rank]
        assert b["keys"] == a["keys"][CKPT_STEP:]
        assert max(abs(x - y) for x, y in zip(b["losses"], a["losses"][CKPT_STEP:])) <= 1e-6, (a["losses"], b["losses"])
        for name, value in states[rank]["final"].items():
            assert torch.allclose(resumed["states"][rank]["final"][name], value, atol=1e-6, rtol=0), name

"""The ``qwen2_5vl7b_*`` recipes, as written, trained through ``scripts.train`` on offline replicas of
Qwen2.5-VL-7B-Instruct and whisper-large-v3-turbo (only the checkpoint paths, the data, the step count and the CPU
are overridden, as in `tests/training/test_real_recipes.py`). Export is family-independent (tested on Qwen2-VL there); a
saved Qwen2.5-VL folder reloading and generating identically is tested in
`tests/pretrained/test_real_checkpoints_qwen2_5_vl.py`."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from scripts.train import main as train_main
from tests.helpers import make_shards, single_thread  # noqa: F401  (fixture)
from tests.training.test_real_recipes import _recipe_args

RECIPES = ("qwen2_5vl7b_stage1.yaml", "qwen2_5vl7b_stage2.yaml")
AUDIO_TOKEN_IDS = [151665, 151666, 151667]  # after Qwen2.5's 22 added tokens


@pytest.fixture(scope="module")
def runs(hub_replica_qwen2_5_vl, tmp_path_factory):
    """Stage 1, then stage 2 from it, each with its recipe's own relative output paths (runs/qwen2_5vl7b/...)."""
    work = tmp_path_factory.mktemp("recipes_qwen2_5_vl")
    shards = make_shards(work / "data", num=4, seed=0, maxcount=2)["glob"]
    cwd = os.getcwd()
    try:
        os.chdir(work)
        clis = {name: train_main(_recipe_args(name, hub_replica_qwen2_5_vl, shards)) for name in RECIPES}
    finally:
        os.chdir(cwd)
    return work, clis


def test_both_recipes_train_qwen2_5_vl_on_the_replicas(runs):
    from transformers import Qwen2_5_VLForConditionalGeneration

    work, clis = runs
    for name, cli in clis.items():
        assert cli.trainer.global_step == 2, name
        assert cli.trainer.precision == "bf16-mixed", name  # the frozen base in bf16: checked on the weights below
        net = cli.model.audio_vlm
        assert isinstance(net, Qwen2_5_VLForConditionalGeneration), type(net)
        assert net.config.audio_token_id == AUDIO_TOKEN_IDS[1]
        assert net.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
        assert net.audio_projector.weight.shape == (128, 64)
        assert (work / cli.model.output_dir / "adapter").is_dir() == ("stage2" in name)
    stage1 = load_file(str(work / "runs/qwen2_5vl7b/stage1/output/projector.safetensors"))
    stage2 = load_file(str(work / "runs/qwen2_5vl7b/stage2/output/projector.safetensors"))
    assert not torch.equal(stage2["audio_projector.weight"], stage1["audio_projector.weight"])  # moved on

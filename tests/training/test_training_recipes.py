"""Every YAML recipe parses with the training CLI (without building the 7B model), holds the intended settings,
and the tiny recipe instantiates module, data module and trainer (Rich progress bar, atomic checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.train import main as train_main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))
EXPECTED = {
    "tiny_stage1.yaml",
    "tiny_stage2.yaml",
    "qwen2vl7b_stage1.yaml",
    "qwen2vl7b_stage2.yaml",
    "qwen2vl7b_stage2_vlat.yaml",
    "qwen2vl7b_stage2_qlora.yaml",
    "qwen2_5vl7b_stage1.yaml",
    "qwen2_5vl7b_stage2.yaml",
}
# recipe name prefix -> the real VLM it trains
REAL_VLMS = {"qwen2vl7b": "Qwen/Qwen2-VL-7B-Instruct", "qwen2_5vl7b": "Qwen/Qwen2.5-VL-7B-Instruct"}


def test_all_recipes_present():
    assert EXPECTED <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_recipe_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:  # --print_config prints the resolved config and exits
        train_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    model, trainer = resolved["model"], resolved["trainer"]
    assert trainer["gradient_clip_val"] == 1.0
    assert any("AtomicCheckpointIO" in p["class_path"] for p in trainer["plugins"])
    assert any(c["class_path"].endswith("ModelCheckpoint") for c in trainer["callbacks"])
    name, real_vlm = config.name, REAL_VLMS.get(config.name.split("_stage")[0])
    if real_vlm:
        assert model["model"] == "pretrained"
        assert model["vlm"] == real_vlm and model["whisper"] == "openai/whisper-large-v3-turbo"
        assert trainer["precision"] == "bf16-mixed"
    else:
        assert model["model"] == "tiny" and trainer["accelerator"] == "cpu" and trainer["precision"] == "32-true"
    if "stage2" in name:
        assert model["stage"] == 2 and model["init_from"]
        assert (model["lora_r"], model["lora_alpha"], model["lora_dropout"]) == (8, 16, 0.05)
        assert model["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
        if real_vlm:
            assert model["lr"] == 5e-5  # paper App. D.1
    else:
        assert model["stage"] == 1
    assert model["quantization"] == ("4bit" if "qlora" in name else None)
    assert bool(model["vlat"]) == ("vlat" in name)


def test_tiny_recipe_instantiates(tmp_path):
    from lightning.pytorch.callbacks import RichProgressBar

    from recipes.training.checkpointing import AtomicCheckpointIO
    from recipes.training.module import AudioVLMLightningModule

    config = str(CONFIGS[0].parent / "tiny_stage2.yaml")
    cli = train_main(
        [
            "--config",
            config,
            "--model.init_from=null",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--data.max_tokens=128",
        ],
        run=False,
    )
    assert isinstance(cli.model, AudioVLMLightningModule) and cli.model.stage == 2
    assert any(isinstance(c, RichProgressBar) for c in cli.trainer.callbacks)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert cli.datamodule.batch_size == 16 and cli.datamodule.max_tokens == 128

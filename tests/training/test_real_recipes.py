"""Every ``qwen2vl7b_*`` recipe, as written, trained through ``scripts.train`` on offline replicas of
Qwen2-VL-7B-Instruct and whisper-large-v3-turbo (only the checkpoint paths, the data, the step count and the CPU
are overridden), then ``scripts.export``, reload, generate. The QLoRA recipe needs CUDA: on a machine without it,
it must refuse before loading anything, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scripts.train import main as train_main
from tests.helpers import make_shards, single_thread  # noqa: F401  (fixture)

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _recipe_args(name: str, hub_replicas: dict, shards: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / name),
        f"--model.vlm={hub_replicas['vlm']}",
        f"--model.whisper={hub_replicas['whisper']}",
        f"--data.train_shards={shards}",
        f"--data.val_shards={shards}",
        "--data.batch_size=1",
        "--data.num_workers=0",
        "--data.shuffle_buffer=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=2",
        "--trainer.num_sanity_val_steps=0",
    ]


@pytest.fixture(scope="module")
def runs(hub_replicas, tmp_path_factory):
    """Stage 1, then stage 2 and stage 2 + VLAT from it, each with its recipe's own relative output paths
    (runs/qwen2vl7b/...) inside a scratch folder."""
    import os

    work = tmp_path_factory.mktemp("recipes")
    shards = make_shards(work / "data", num=4, seed=0, maxcount=2)["glob"]
    cwd = os.getcwd()
    clis = {}
    try:
        os.chdir(work)
        for name in ("qwen2vl7b_stage1.yaml", "qwen2vl7b_stage2.yaml", "qwen2vl7b_stage2_vlat.yaml"):
            clis[name] = train_main(_recipe_args(name, hub_replicas, shards))
    finally:
        os.chdir(cwd)
    return work, clis


def test_each_recipe_trains_on_the_replicas(runs, hub_replicas):
    work, clis = runs
    for name, cli in clis.items():
        assert cli.trainer.global_step == 2, name
        assert cli.trainer.precision == "bf16-mixed" and cli.model.spec.dtype == "bfloat16", name
        net = cli.model.audio_vlm
        assert net.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
        assert net.audio_projector.weight.shape == (128, 64)
        out = work / cli.model.output_dir
        spec = json.loads((out / "training_spec.json").read_text())
        assert (spec["vlm"], spec["whisper"]) == (str(hub_replicas["vlm"]), str(hub_replicas["whisper"]))
        assert (out / "projector.safetensors").is_file()
        assert (out / "adapter").is_dir() == ("stage2" in name)
    stage1 = load_file(str(work / "runs/qwen2vl7b/stage1/output/projector.safetensors"))
    for name in ("stage2", "stage2_vlat"):  # both started from stage 1 and moved on
        trained = load_file(str(work / f"runs/qwen2vl7b/{name}/output/projector.safetensors"))
        assert not torch.equal(trained["audio_projector.weight"], stage1["audio_projector.weight"])
    assert clis["qwen2vl7b_stage2_vlat.yaml"].model.vlat_sampler is not None


def test_qlora_recipe_refuses_without_cuda_before_loading(hub_replicas, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the QLoRA recipe for real")
    from audio_adapter import AudioVLMForConditionalGeneration

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(AudioVLMForConditionalGeneration, "from_pretrained", no_load)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        train_main(_recipe_args("qwen2vl7b_stage2_qlora.yaml", hub_replicas, str(tmp_path / "none.tar")))


def test_export_reload_generate(runs, tmp_path):
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
    from recipes.inference.common import chat_prompt
    from scripts import export
    from tests.helpers import tone_clip

    work, clis = runs
    run = work / "runs/qwen2vl7b/stage2/output"
    export.main(["--run", str(run), "--out", str(tmp_path / "merged"), "--dtype", "bfloat16"])
    model = AudioVLMForConditionalGeneration.from_pretrained(str(tmp_path / "merged")).eval()
    processor = AudioVLMProcessor.from_pretrained(tmp_path / "merged")
    assert not any("lora_" in k for k in model.state_dict())
    trained = load_file(str(run / "projector.safetensors"))
    assert model.dtype == torch.bfloat16  # the recipe's documented export
    assert torch.equal(model.audio_projector.weight, trained["audio_projector.weight"].to(torch.bfloat16))
    # the LoRA update is merged into the LM's attention (the base replica weights differ from the export's)
    trainer_net = clis["qwen2vl7b_stage2.yaml"].model.model
    lora_b = [p for n, p in trainer_net.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b)
    assert model.generation_config.suppress_tokens == [151657, 151658, 151659]
    inputs = processor(text=[chat_prompt(processor, "What do you hear?")], audio=[tone_clip(1.0)], sampling_rate=16000)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)

"""Stage 2 on the tiny model: LoRA on the language model's q/k/v/o only + the projector; the adapter saves and
loads; the exported (merged) checkpoint loads offline with from_pretrained and gives the unmerged logits."""

from __future__ import annotations

import re

import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.data.collate import model_inputs
from recipes.data.dataset import AudioShardDataset
from recipes.training.export import export
from recipes.training.module import ADAPTER_DIR, AudioVLMLightningModule, lora_target_regex
from recipes.training.projector_file import load_projector_file
from scripts.export import main as export_main
from tests.helpers import (
    StepRecorder,
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("stage2_data"), num=16, seed=1, maxcount=4)


@pytest.fixture(scope="module")
def stage1_out(shards, tmp_path_factory):
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2)
    trainer(4).fit(module, datamodule(shards["glob"]))
    return module.save_trained(tmp_path_factory.mktemp("s1"))


@pytest.fixture(scope="module")
def stage2(shards, stage1_out, tmp_path_factory):
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=2, init_from=str(stage1_out), lr=1e-2)
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    rec = StepRecorder()
    trainer(12, [rec]).fit(module, datamodule(shards["glob"], seed=3))
    out = tmp_path_factory.mktemp("s2")
    module.save_trained(out)
    batch = next(iter(AudioShardDataset(shards["glob"], module.processor, batch_size=3)))
    return {
        "module": module.eval(),
        "before": before,
        "out": out,
        "inputs": model_inputs(batch, with_labels=False),
        "losses": rec.losses,
    }


def test_lora_regex_matches_language_model_attention_only():
    regex = re.compile(lora_target_regex())
    hits = [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.27.self_attn.o_proj",
        "model.language_model.layers.3.self_attn.k_proj",
    ]
    misses = [
        "audio_tower.layers.0.self_attn.q_proj",
        "audio_tower.layers.0.self_attn.out_proj",
        "model.visual.blocks.0.attn.qkv",
        "model.visual.blocks.0.attn.proj",
        "model.language_model.layers.0.mlp.up_proj",
        "model.language_model.layers.0.self_attn.q_proj.lora_A",
    ]
    assert all(regex.fullmatch(n) for n in hits)
    assert not any(regex.fullmatch(n) for n in misses)
    with pytest.raises(ValueError):
        lora_target_regex(["q_proj|.*"])


def test_stage2_lora_placement(stage2):
    module = stage2["module"]
    lora_modules = sorted({n.split(".lora_")[0] for n, _ in module.model.named_parameters() if ".lora_" in n})
    layers = module.audio_vlm.config.text_config.num_hidden_layers
    assert len(lora_modules) == 4 * layers
    assert all(".language_model.layers." in n and ".self_attn." in n for n in lora_modules)
    trainable = module.trainable_parameter_names()
    assert all(".lora_" in n or n.endswith("audio_projector.weight") for n in trainable)
    assert not any("audio_tower" in n or ".visual." in n for n in trainable)


def test_stage2_changes_only_lora_and_projector(stage2):
    before, after = stage2["before"], stage2["module"].model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed, "nothing trained"
    assert all(".lora_B." in k or ".lora_A." in k or k.endswith("audio_projector.weight") for k in changed), changed
    assert any(k.endswith("audio_projector.weight") for k in changed)
    assert any(".lora_B." in k for k in changed)


def test_stage2_starts_from_stage1_output(stage1_out):
    from audio_adapter.testing import tiny_model_and_processor

    expected, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    load_projector_file(expected, stage1_out)
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=2, init_from=str(stage1_out))
    got = module.audio_vlm
    assert torch.equal(got.audio_projector.weight, expected.audio_projector.weight)
    assert torch.equal(got.get_input_embeddings().weight, expected.get_input_embeddings().weight)


def test_adapter_saves_and_loads(stage2):
    from peft import PeftModel

    from audio_adapter.testing import tiny_model_and_processor

    out = stage2["out"]
    assert (out / ADAPTER_DIR / "adapter_config.json").is_file()
    assert (out / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    base, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    load_projector_file(base, out)
    reloaded = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).eval()
    with torch.no_grad():
        a = stage2["module"].model(**stage2["inputs"]).logits
        b = reloaded(**stage2["inputs"]).logits
    assert (a - b).abs().max() <= 1e-5


def test_export_merged_checkpoint_matches_unmerged(stage2, tmp_path):
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor

    dest = tmp_path / "merged"
    assert export_main(["--run", str(stage2["out"]), "--out", str(dest)]) == 0
    model = AudioVLMForConditionalGeneration.from_pretrained(str(dest)).eval()
    processor = AudioVLMProcessor.from_pretrained(dest)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert processor.audio_token_id == model.config.audio_token_id
    with torch.no_grad():
        unmerged = stage2["module"].model(**stage2["inputs"]).logits
        merged = model(**stage2["inputs"]).logits
    diff = (unmerged - merged).abs().max().item()
    assert diff <= 1e-4, diff
    # and the merge really folded the adapter in: the plain base + projector differs
    from audio_adapter.testing import tiny_model_and_processor

    plain, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    load_projector_file(plain, stage2["out"])
    with torch.no_grad():
        assert (plain.eval()(**stage2["inputs"]).logits - merged).abs().max() > 1e-4


def test_export_stage1_run(stage1_out, tmp_path):
    from audio_adapter import AudioVLMForConditionalGeneration

    dest = export(stage1_out, tmp_path / "merged1")
    model = AudioVLMForConditionalGeneration.from_pretrained(str(dest))
    from audio_adapter.testing import tiny_model_and_processor

    expected, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    load_projector_file(expected, stage1_out)
    for k, v in expected.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k

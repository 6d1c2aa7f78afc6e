"""The real-checkpoint path for Qwen2.5-VL, proven against an offline replica of ``Qwen/Qwen2.5-VL-7B-Instruct``.

`make_qwen2_5_vl_replica` writes the repository file for file (the hub's flat config, its tokenizer with 22 added
tokens and no audio tokens, its chat template, image and generation settings, bf16 legacy-named weights in five
shards) at tiny widths. Stock transformers must load it completely; the audio model built from it must carry every
tensor bit for bit, place the audio tokens after Qwen2.5's last added token, and generate.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from audio_adapter.processing.tokenizer import AUDIO_SPECIAL_TOKENS, QWEN2_VL_SPECIAL_TOKENS
from audio_adapter.testing.hub_replica_qwen2_5_vl import (
    QWEN2_5_EXTRA_TOKENS,
    QWEN2_5_VL_7B_CONFIG,
    QWEN2_5_VL_GENERATION_CONFIG,
    QWEN2_5_VL_REPLICA_VISION_WIDTHS,
)
from audio_adapter.testing.hub_replicas import QWEN2_VL_CHAT_TEMPLATE, QWEN2_VL_REPLICA_WIDTHS
from tests.pretrained.test_real_checkpoints import (
    ASSEMBLED,
    README,
    SETTINGS,
    assert_readme_batch_reproduced,
    assert_vlm_tensors_bit_equal,
    readme_real_checkpoint_block,
    replica_state,
    run_readme_block,
)

AUDIO_TOKEN_IDS = [151665, 151666, 151667]  # after Qwen2.5's 22 added tokens (Qwen2-VL: 151657..151659)


def test_stock_qwen2_5_vl_loads_the_replica_completely(hub_replica_qwen2_5_vl):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    vlm = hub_replica_qwen2_5_vl["vlm"]
    config = json.loads((vlm / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and "text_config" not in config  # flat legacy layout
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["rope_scaling"] == {"type": "mrope", "mrope_section": [16, 24, 24]}
    assert config["vocab_size"] == 152064 and config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == 128000
    assert config["hidden_size"] // config["num_attention_heads"] == 128
    # only the widths and depths differ from the hub's config.json
    assert {k for k in config if config[k] != QWEN2_5_VL_7B_CONFIG[k]} == {*QWEN2_VL_REPLICA_WIDTHS, "vision_config"}
    vision, hub_vision = config["vision_config"], QWEN2_5_VL_7B_CONFIG["vision_config"]
    assert {k for k, v in vision.items() if v != hub_vision[k]} == set(QWEN2_5_VL_REPLICA_VISION_WIDTHS)
    assert vision["out_hidden_size"] == config["hidden_size"] != vision["hidden_size"]
    assert vision["fullatt_block_indexes"] == [vision["depth"] - 1] and vision["window_size"] == 112
    assert json.loads((vlm / "generation_config.json").read_text()) == QWEN2_5_VL_GENERATION_CONFIG
    assert json.loads((vlm / "chat_template.json").read_text())["chat_template"] == QWEN2_VL_CHAT_TEMPLATE
    assert json.loads((vlm / "preprocessor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"

    files = replica_state(vlm)
    index = json.loads((vlm / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(files) and len(set(index.values())) == 5
    assert all(re.match(r"^(model\.(layers|embed_tokens|norm)|visual|lm_head)\.", k) for k in files)
    assert any(".mlp.gate_proj." in k for k in files if k.startswith("visual."))  # Qwen2.5's SwiGLU vision MLP
    assert {t.dtype for t in files.values()} == {torch.bfloat16}
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(vlm), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.bfloat16 and len(model.state_dict()) == len(files)

    tokenizer = AutoTokenizer.from_pretrained(str(vlm))
    assert len(tokenizer) == 151665  # 151,643 ranks + 22 added tokens
    added = QWEN2_VL_SPECIAL_TOKENS + QWEN2_5_EXTRA_TOKENS
    assert [tokenizer.convert_tokens_to_ids(t) for t in added] == list(range(151643, 151665))
    decoder = tokenizer.added_tokens_decoder
    assert [decoder[i].special for i in range(151643, 151665)] == [True] * 14 + [False] * 8
    assert not any(t in tokenizer.get_vocab() for t in AUDIO_SPECIAL_TOKENS)
    assert tokenizer("Hello world 12").input_ids == [9707, 1879, 220, 16, 17]  # Qwen2 BPE, single digits
    assert tokenizer("<tool_call>").input_ids == [151657]  # one token, not split by the BPE
    assert tokenizer.padding_side == "right"  # the hub file names none: the processor must pad left itself


def test_full_size_config_is_the_7b_checkpoint():
    """The hub config, unshrunk, builds a model of the published size: 8,292,166,656 parameters, i.e. the hub
    index's bf16 ``total_size`` of 16,584,333,312 bytes (checks every width, depth and vocabulary size at once)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_dict(copy.deepcopy(QWEN2_5_VL_7B_CONFIG)))
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    assert sum(p.numel() * 2 for p in model.state_dict().values()) == 16_584_333_312


# ============================================================================================ the README block
QWEN2_5_VL_LINE = SETTINGS[0].replace('"Qwen/Qwen2-VL-7B-Instruct"', '"Qwen/Qwen2.5-VL-7B-Instruct"')


@pytest.fixture(scope="module")
def readme_run_qwen2_5_vl(hub_replica_qwen2_5_vl, tmp_path_factory):
    """The README block with the one line its "Qwen2.5-VL" section changes, run against the Qwen2.5-VL replica."""
    text = README.read_text()
    section = text[text.index("### Qwen2.5-VL") :]
    changed = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert changed == QWEN2_5_VL_LINE + "\n", "the README's Qwen2.5-VL line must differ from the block's in the id only"
    block = readme_real_checkpoint_block()
    return run_readme_block(block, hub_replica_qwen2_5_vl, tmp_path_factory.mktemp("readme_qwen2_5_vl"))


def test_readme_block_runs_on_qwen2_5_vl(readme_run_qwen2_5_vl):
    from transformers import Qwen2_5_VLForConditionalGeneration

    ns = readme_run_qwen2_5_vl["ns"]
    model, processor = ns["model"], ns["processor"]
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration) and model.config.model_type == "audio_qwen2_5_vl"
    assert model.dtype == torch.bfloat16
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in AUDIO_SPECIAL_TOKENS]
    config_ids = [model.config.audio_bos_token_id, model.config.audio_token_id, model.config.audio_eos_token_id]
    assert ids == config_ids == AUDIO_TOKEN_IDS
    assert max(ids) < model.config.text_config.vocab_size == 152064  # fits: no resize
    assert model.generation_config.suppress_tokens == AUDIO_TOKEN_IDS
    assert model.generation_config.temperature == 0.1 and model.generation_config.top_k == 1  # the hub's settings
    inputs, batch, out = ns["inputs"], ns["batch"], ns["out"]
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == 125  # 2.5 s at 50 tokens / s
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 6  # window-attention tower, same count
    assert bool(batch["attention_mask"][:, -1].all()) and not bool(batch["attention_mask"][:, 0].all())  # left pad
    assert out.shape == (2, batch["input_ids"].shape[1] + 6)
    assert not torch.isin(out[:, batch["input_ids"].shape[1] :], torch.tensor(AUDIO_TOKEN_IDS)).any()
    printed = readme_run_qwen2_5_vl["stdout"].rstrip("\n").splitlines()  # decoded random text may hold newlines
    assert printed[-1].startswith("['") and printed[-1].endswith("']")  # the batch's two answers, as a list


def test_every_qwen2_5_vl_replica_tensor_arrives_bit_equal(readme_run_qwen2_5_vl, hub_replica_qwen2_5_vl):
    state = readme_run_qwen2_5_vl["ns"]["model"].state_dict()
    replica = replica_state(hub_replica_qwen2_5_vl["vlm"])
    assert len(replica) == len([k for k in state if not k.startswith(("audio_tower.", "audio_projector."))])
    summary = [s for s in readme_run_qwen2_5_vl["stderr"].splitlines() if s.startswith("audio_adapter: loaded")]
    assert len(summary) == 1 and f"loaded {len(replica)} Qwen2.5-VL tensors" in summary[0]
    assert_vlm_tensors_bit_equal(state, replica, AUDIO_TOKEN_IDS)


def test_saved_qwen2_5_vl_folder_round_trips(readme_run_qwen2_5_vl):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from audio_adapter import AudioVLMProcessor

    ns, folder = readme_run_qwen2_5_vl["ns"], readme_run_qwen2_5_vl["dir"] / ASSEMBLED
    reloaded = AutoModelForImageTextToText.from_pretrained(str(folder)).eval()
    assert type(reloaded) is type(ns["model"])
    before, after = ns["model"].state_dict(), reloaded.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    processor = AutoProcessor.from_pretrained(str(folder))  # the Auto class, as for Qwen2-VL folders
    assert type(processor) is AudioVLMProcessor
    assert_readme_batch_reproduced(processor, reloaded, ns)

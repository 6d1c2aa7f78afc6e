"""The real-checkpoint path for Qwen2.5-VL, proven against an offline replica of ``Qwen/Qwen2.5-VL-7B-Instruct``.

`make_qwen2_5_vl_replica` writes the repository file for file (the hub's flat config, its tokenizer with 22 added
tokens and no audio tokens, its chat template, image and generation settings, bf16 legacy-named weights in five
shards) at tiny widths. Stock transformers must load it completely; the audio model built from it must carry every
tensor bit for bit, place the audio tokens after Qwen2.5's last added token, and generate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from audio_adapter.hub_replica_qwen2_5_vl import QWEN2_5_EXTRA_TOKENS, QWEN2_5_VL_GENERATION_CONFIG
from audio_adapter.hub_replicas import QWEN2_VL_CHAT_TEMPLATE
from audio_adapter.tokenizer import AUDIO_SPECIAL_TOKENS, QWEN2_VL_SPECIAL_TOKENS


def _replica_state(directory: Path) -> dict[str, torch.Tensor]:
    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


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
    vision = config["vision_config"]
    assert vision["out_hidden_size"] == config["hidden_size"] != vision["hidden_size"]
    assert vision["fullatt_block_indexes"] == [vision["depth"] - 1] and vision["window_size"] == 112
    assert json.loads((vlm / "generation_config.json").read_text()) == QWEN2_5_VL_GENERATION_CONFIG
    assert json.loads((vlm / "chat_template.json").read_text())["chat_template"] == QWEN2_VL_CHAT_TEMPLATE
    assert json.loads((vlm / "preprocessor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"

    files = _replica_state(vlm)
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

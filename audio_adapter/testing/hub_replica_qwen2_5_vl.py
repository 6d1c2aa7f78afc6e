"""Offline miniature copy of the ``Qwen/Qwen2.5-VL-7B-Instruct`` hub repository, file for file.

Like the Qwen2-VL replica (`hub_replicas.py`): the real files' names, keys and values at tiny widths, random
weights. What differs from Qwen2-VL, and is therefore real here too: ``model_type`` ``qwen2_5_vl`` with its own
architecture name; a 128,000-token ``max_position_embeddings``; a vision tower with RMSNorm, SwiGLU MLPs and
window attention (``hidden_size`` is the tower's width, ``out_hidden_size`` the language model's,
``fullatt_block_indexes`` the blocks with full attention, ``window_size`` 112 pixels, ``tokens_per_second`` 2);
``temperature`` 0.1 in ``generation_config.json``; ``Qwen2_5_VLProcessor`` in ``preprocessor_config.json``;
and a tokenizer with 22 added tokens, not 14: after the same 14 special ones (151,643..151,656) come eight
non-special ones, ``<tool_call>`` .. ``<|file_sep|>`` at 151,657..151,664. So the three audio tokens take
151,665..151,667 here (still inside the 152,064-row embedding), not Qwen2-VL's 151,657..151,659.

What is shrunk: the language model as in the Qwen2-VL replica (one head of the real head_dim 128, so the
M-RoPE section [16, 24, 24] fits; 2 layers); the vision tower to depth 2 with full attention in its last block
(as the real tower: blocks 7, 15, 23, 31 of 32), width 32.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..processing.tokenizer import QWEN2_VL_SPECIAL_TOKENS
from .hub_replica_io import added_tokens_decoder, legacy_qwen_vl_state, save_sharded, write_json, write_qwen_tokenizer
from .hub_replicas import QWEN2_VL_CHAT_TEMPLATE, QWEN2_VL_PREPROCESSOR_CONFIG, QWEN2_VL_REPLICA_WIDTHS

QWEN2_5_VL_DIR = "Qwen2.5-VL-7B-Instruct"

# Added after Qwen2-VL's 14 special tokens, not special (Qwen2.5's tool-call and fill-in-the-middle tokens).
QWEN2_5_EXTRA_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# Qwen/Qwen2.5-VL-7B-Instruct config.json: the hub's flat keys and values, in its order; only widths/depths are
# shrunk (see QWEN2_5_VL_REPLICA_VISION_WIDTHS and hub_replicas.QWEN2_VL_REPLICA_WIDTHS).
QWEN2_5_VL_7B_CONFIG = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}
QWEN2_5_VL_REPLICA_VISION_WIDTHS = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 128,  # the replica language model's hidden_size
    "fullatt_block_indexes": [1],  # the last block, as 31 is the real tower's last
}

QWEN2_5_VL_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
    "transformers_version": "4.37.0",
}

# The same image settings and chat template as Qwen2-VL's; only the processor class differs.
QWEN2_5_VL_PREPROCESSOR_CONFIG = {**QWEN2_VL_PREPROCESSOR_CONFIG, "processor_class": "Qwen2_5_VLProcessor"}


def _tokenizer_config() -> dict:
    """The hub's ``tokenizer_config.json`` (it names no ``padding_side``: transformers' default, right)."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(QWEN2_VL_SPECIAL_TOKENS, QWEN2_5_EXTRA_TOKENS),
        "additional_special_tokens": list(QWEN2_VL_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {},
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def make_qwen2_5_vl_replica(directory: str | Path, seed: int = 0, shards: int = 5) -> Path:
    """Write a Qwen2.5-VL-7B-Instruct look-alike (tiny widths, random bf16 weights) to ``directory``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(QWEN2_5_VL_7B_CONFIG)
    config.update(QWEN2_VL_REPLICA_WIDTHS)
    config["vision_config"].update(QWEN2_5_VL_REPLICA_VISION_WIDTHS)
    write_json(directory / "config.json", config)
    write_json(directory / "generation_config.json", QWEN2_5_VL_GENERATION_CONFIG)
    write_json(directory / "preprocessor_config.json", QWEN2_5_VL_PREPROCESSOR_CONFIG)
    write_json(directory / "chat_template.json", {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    write_json(directory / "tokenizer_config.json", _tokenizer_config())
    write_qwen_tokenizer(directory, QWEN2_VL_SPECIAL_TOKENS, QWEN2_5_EXTRA_TOKENS)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(str(directory)))
    save_sharded(directory, legacy_qwen_vl_state(model), shards)
    return directory

"""Offline miniature copies of the two hub repositories the README names, file for file.

``make_hub_replicas(root)`` writes ``root/Qwen2-VL-7B-Instruct`` and ``root/whisper-large-v3-turbo`` with the
real files' names, keys and values (config, tokenizer, chat template, image / feature-extractor settings,
generation settings, weight key names, dtypes and sharding) and random weights at tiny widths. Everything a
user runs against the real checkpoints can then be run, offline and in seconds, against these.

What is shrunk: the widths and depths (Qwen2-VL keeps head_dim 128 so the real M-RoPE section
[16, 24, 24] fits; Whisper keeps its 128 mel bins, 1500-frame windows, 4 decoder layers and 51,866-row
vocabulary). What is real: the full 151,643-rank Qwen BPE with the 14 Qwen2-VL special tokens at
151643..151656 and *no* audio tokens, the 152,064-row embedding, the token ids in the configs, the
sampling settings of Qwen2-VL's ``generation_config.json``, bf16 weights under the legacy key names
(``model.layers.*``, ``model.embed_tokens.*``, ``visual.*``, ``lm_head.*``) sharded with an index, and a
full fp16 ``WhisperForConditionalGeneration`` checkpoint (encoder and decoder). The Qwen2.5-VL-7B-Instruct
replica lives in `hub_replica_qwen2_5_vl.py`; the file writing both share, in `hub_replica_io.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..pretrained.offline_parts.ctranslate2_whisper import whisper_preprocessor_config
from ..processing.tokenizer import QWEN2_VL_SPECIAL_TOKENS
from .hub_replica_io import added_tokens_decoder, legacy_qwen_vl_state, save_sharded, write_json, write_qwen_tokenizer

QWEN_DIR = "Qwen2-VL-7B-Instruct"
WHISPER_DIR = "whisper-large-v3-turbo"

# Qwen/Qwen2-VL-7B-Instruct config.json: the hub's keys and values; only the widths/depths are shrunk
# (hub: hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 kv heads; vision depth 32, embed 1280, 16 heads).
QWEN2_VL_7B_CONFIG = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
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
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
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
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}
QWEN2_VL_REPLICA_WIDTHS = {
    "hidden_size": 128,  # one head of 128: the real head_dim, so mrope_section [16, 24, 24] fits
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
}
QWEN2_VL_REPLICA_VISION_WIDTHS = {"depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 128}

QWEN2_VL_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.01,
    "top_p": 0.001,
    "top_k": 1,
    "transformers_version": "4.37.0",
}

QWEN2_VL_PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}

QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def _qwen2_vl_tokenizer_config(padding_side: str | None) -> dict:
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(QWEN2_VL_SPECIAL_TOKENS),
        "additional_special_tokens": list(QWEN2_VL_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "padding_side": "left",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if padding_side is not None:  # override the hub's "left" (e.g. to check the processor pads left itself)
        config["padding_side"] = padding_side
    return config


# openai/whisper-large-v3-turbo config.json, widths shrunk (hub: d_model 1280, 32 encoder layers, 20 heads, ffn 5120).
WHISPER_TURBO_CONFIG = {
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "apply_spec_augment": False,
    "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50256],  # sic: the hub's config.json says 50256; generation_config.json 50257
    "bos_token_id": 50257,
    "classifier_proj_size": 256,
    "d_model": 1280,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 4,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 32,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_time_prob": 0.05,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "median_filter_width": 7,
    "model_type": "whisper",
    "num_hidden_layers": 32,
    "num_mel_bins": 128,
    "pad_token_id": 50257,
    "scale_embedding": False,
    "torch_dtype": "float16",
    "transformers_version": "4.46.0.dev0",
    "use_cache": True,
    "use_weighted_layer_sum": False,
    "vocab_size": 51866,
}
WHISPER_REPLICA_WIDTHS = {
    "d_model": 64,
    "encoder_layers": 2,
    "num_hidden_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 128,
}
WHISPER_PREPROCESSOR_CONFIG = whisper_preprocessor_config(128)  # large-v3(-turbo): 128 mel bins
# The 100 language tokens of whisper-large-v3(-turbo), in id order from 50259 (<|yue|> is v3's addition at 50358).
WHISPER_LANGUAGES = (
    "en",
    "zh",
    "de",
    "es",
    "ru",
    "ko",
    "fr",
    "ja",
    "pt",
    "tr",
    "pl",
    "ca",
    "nl",
    "ar",
    "sv",
    "it",
    "id",
    "hi",
    "fi",
    "vi",
    "he",
    "uk",
    "el",
    "ms",
    "cs",
    "ro",
    "da",
    "hu",
    "ta",
    "no",
    "th",
    "ur",
    "hr",
    "bg",
    "lt",
    "la",
    "mi",
    "ml",
    "cy",
    "sk",
    "te",
    "fa",
    "lv",
    "bn",
    "sr",
    "az",
    "sl",
    "kn",
    "et",
    "mk",
    "br",
    "eu",
    "is",
    "hy",
    "ne",
    "mn",
    "bs",
    "kk",
    "sq",
    "sw",
    "gl",
    "mr",
    "pa",
    "si",
    "km",
    "sn",
    "yo",
    "so",
    "af",
    "oc",
    "ka",
    "be",
    "tg",
    "sd",
    "gu",
    "am",
    "yi",
    "lo",
    "uz",
    "fo",
    "ht",
    "ps",
    "tk",
    "nn",
    "mt",
    "sa",
    "lb",
    "my",
    "bo",
    "tl",
    "mg",
    "as",
    "tt",
    "haw",
    "ln",
    "ha",
    "ba",
    "jw",
    "su",
    "yue",
)
# openai/whisper-large-v3-turbo generation_config.json (turbo's own alignment heads; it suppresses no tokens).
WHISPER_GENERATION_CONFIG = {
    "alignment_heads": [[2, 4], [2, 11], [3, 3], [3, 6], [3, 11], [3, 14]],
    "begin_suppress_tokens": [220, 50257],
    "bos_token_id": 50257,
    "decoder_start_token_id": 50258,
    "eos_token_id": 50257,
    "forced_decoder_ids": [[1, None], [2, 50360]],
    "is_multilingual": True,
    "lang_to_id": dict(sorted((f"<|{code}|>", 50259 + i) for i, code in enumerate(WHISPER_LANGUAGES))),
    "max_initial_timestamp_index": 50,
    "max_length": 448,
    "no_timestamps_token_id": 50364,
    "pad_token_id": 50257,
    "prev_sot_token_id": 50362,
    "return_timestamps": False,
    "suppress_tokens": [],
    "task_to_id": {"transcribe": 50360, "translate": 50359},
    "transformers_version": "4.46.0.dev0",
}


def make_qwen2_vl_replica(
    directory: str | Path, seed: int = 0, padding_side: str | None = None, shards: int = 5
) -> Path:
    """Write a Qwen2-VL-7B-Instruct look-alike (tiny widths, random bf16 weights) to ``directory``.

    ``padding_side``: written into ``tokenizer_config.json`` when given (e.g. ``"right"``: the processor must still
    pad left for generation).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(QWEN2_VL_7B_CONFIG)
    config.update(QWEN2_VL_REPLICA_WIDTHS)
    config["vision_config"].update(QWEN2_VL_REPLICA_VISION_WIDTHS)
    write_json(directory / "config.json", config)
    write_json(directory / "generation_config.json", QWEN2_VL_GENERATION_CONFIG)
    write_json(directory / "preprocessor_config.json", QWEN2_VL_PREPROCESSOR_CONFIG)
    write_json(directory / "chat_template.json", {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    write_json(directory / "tokenizer_config.json", _qwen2_vl_tokenizer_config(padding_side))
    write_qwen_tokenizer(directory, QWEN2_VL_SPECIAL_TOKENS)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_pretrained(str(directory)))
    save_sharded(directory, legacy_qwen_vl_state(model), shards)
    return directory


def make_whisper_turbo_replica(directory: str | Path, seed: int = 0) -> Path:
    """Write a whisper-large-v3-turbo look-alike (tiny widths, random fp16 encoder + decoder) to ``directory``."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(WHISPER_TURBO_CONFIG)
    config.update(WHISPER_REPLICA_WIDTHS)
    write_json(directory / "config.json", config)
    write_json(directory / "generation_config.json", WHISPER_GENERATION_CONFIG)
    write_json(directory / "preprocessor_config.json", WHISPER_PREPROCESSOR_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(str(directory)))
    # proj_out is tied to the decoder's token embedding: the hub file stores it once, as here.
    state = {
        k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items() if k != "proj_out.weight"
    }
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def make_hub_replicas(root: str | Path, seed: int = 0, padding_side: str | None = None) -> dict[str, Path]:
    """Both replicas under ``root``; returns ``{"vlm": <Qwen2-VL dir>, "whisper": <Whisper dir>}``."""
    root = Path(root)
    return {
        "vlm": make_qwen2_vl_replica(root / QWEN_DIR, seed=seed, padding_side=padding_side),
        "whisper": make_whisper_turbo_replica(root / WHISPER_DIR, seed=seed + 1),
    }

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
full fp16 ``WhisperForConditionalGeneration`` checkpoint (encoder and decoder).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from .tokenizer import QWEN2_VL_SPECIAL_TOKENS, QWEN_BPE_RANKS

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
    added = {
        str(QWEN_BPE_RANKS + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, token in enumerate(QWEN2_VL_SPECIAL_TOKENS)
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
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
WHISPER_PREPROCESSOR_CONFIG = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}
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

# 5.x module names -> the legacy names the hub's Qwen2-VL safetensors use.
_LEGACY_QWEN2_VL_KEYS = (
    (re.compile(r"^model\.language_model\."), "model."),
    (re.compile(r"^model\.visual\."), "visual."),
)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _save_sharded(directory: Path, state: dict[str, torch.Tensor], shards: int) -> None:
    """``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, as the hub shards them (Qwen2-VL-7B:
    five files)."""
    from safetensors.torch import save_file

    keys = sorted(state)
    per_shard = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i * per_shard : (i + 1) * per_shard]}
        save_file(part, str(directory / name), metadata={"format": "pt"})
        for k, t in part.items():
            weight_map[k] = name
            total += t.numel() * t.element_size()
    _write_json(
        directory / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )


def _replica_tokenizer_files() -> Path:
    """A cached folder with the real Qwen2-VL ``tokenizer.json``, ``vocab.json`` and ``merges.txt``: the full
    151,643-rank BPE and the 14 Qwen2-VL added tokens, no audio tokens. Converting the BPE takes seconds, so
    it is done once per machine (under ``$AUDIO_VLM_CACHE``, like `build_qwen_tokenizer`)."""
    import hashlib
    import os

    from tokenizers import AddedToken

    from .tokenizer import _cache_dir, _convert_bpe, _qwen_tiktoken_file, publish_cache_dir

    source = _qwen_tiktoken_file()
    digest = hashlib.sha1(f"{source.stat().st_size}:replica:v2".encode()).hexdigest()[:10]
    cached = _cache_dir() / f"qwen2-vl-replica-tokenizer-{digest}"
    if (cached / "tokenizer.json").is_file():
        return cached
    backend = _convert_bpe(source, QWEN_BPE_RANKS)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_VL_SPECIAL_TOKENS])
    spec = json.loads(backend.to_str())
    # The hub's tokenizer.json (written by transformers' Qwen2 converter): NFC normaliser, and byte-level
    # pre-tokenizer / post-processor / decoder with every flag off; the tiktoken converter differs on these.
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec["normalizer"] = {"type": "NFC"}
    spec["pre_tokenizer"]["pretokenizers"][-1] = dict(byte_level)
    spec["post_processor"], spec["decoder"] = dict(byte_level), dict(byte_level)
    spec["model"].update(continuing_subword_prefix="", end_of_word_suffix="")
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    _write_json(tmp / "vocab.json", spec["model"]["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    publish_cache_dir(tmp, cached)
    return cached


def _write_qwen_tokenizer(directory: Path) -> None:
    import shutil

    source = _replica_tokenizer_files()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(source / name, directory / name)


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
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", QWEN2_VL_GENERATION_CONFIG)
    _write_json(directory / "preprocessor_config.json", QWEN2_VL_PREPROCESSOR_CONFIG)
    _write_json(directory / "chat_template.json", {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    _write_json(directory / "tokenizer_config.json", _qwen2_vl_tokenizer_config(padding_side))
    _write_qwen_tokenizer(directory)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_pretrained(str(directory)))
    state = {}
    for key, tensor in model.state_dict().items():
        for pattern, legacy in _LEGACY_QWEN2_VL_KEYS:
            key = pattern.sub(legacy, key)
        state[key] = tensor.detach().to(torch.bfloat16)
    _save_sharded(directory, state, shards)
    return directory


def make_whisper_turbo_replica(directory: str | Path, seed: int = 0) -> Path:
    """Write a whisper-large-v3-turbo look-alike (tiny widths, random fp16 encoder + decoder) to ``directory``."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(WHISPER_TURBO_CONFIG)
    config.update(WHISPER_REPLICA_WIDTHS)
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", WHISPER_GENERATION_CONFIG)
    _write_json(directory / "preprocessor_config.json", WHISPER_PREPROCESSOR_CONFIG)
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

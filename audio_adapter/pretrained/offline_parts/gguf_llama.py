"""A llama.cpp GGUF file of a Llama-architecture model -> dequantised tensors under transformers' legacy names.

Dequantisation is the ``gguf`` package's own (``gguf.quants.dequantize``, float32 out). llama.cpp's converter
permutes the rows of every q and k projection into its rotary layout (per head: the two rotary halves
interleaved, ``convert_hf_to_gguf.py``'s ``LlamaModel.permute``); `unpermute_rotary_rows` undoes it, as
transformers' GGUF loader does (``LlamaTensorProcessor._reverse_permute_weights``), giving back the rows of the
Hugging Face checkpoint (rotate-half layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# GGUF tensor name (block number as {i}) -> transformers' name in the hub's legacy layout (``model.layers.*``).
_LLAMA_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class LlamaGGUF:
    """The model's hyper-parameters (``llama.*`` metadata, the key prefix dropped), the file's ``general.*`` and
    ``tokenizer.chat_template`` metadata, and its tensors (float32, legacy transformers names, q/k un-permuted)."""

    hparams: dict
    general: dict
    chat_template: str | None
    tensors: dict[str, torch.Tensor]


def unpermute_rotary_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (n_head * head_dim, in) rows, per head ``[r0, r1, ...]`` with the
    two rotary halves interleaved (pairs), back to the two halves one after the other."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows cannot hold {n_head} heads of rotary pairs")
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _field(reader, key: str):
    field = reader.fields[key]
    return field.contents()


def _hf_name(gguf_name: str) -> str | None:
    match = _BLOCK.match(gguf_name)
    pattern = gguf_name.replace(match.group(0), "blk.{i}.") if match else gguf_name
    target = _LLAMA_NAMES.get(pattern)
    return None if target is None else target.format(i=match.group(1) if match else "")


def read_llama_gguf(path: str | Path) -> LlamaGGUF:
    """Read and dequantise every tensor of a ``general.architecture == "llama"`` GGUF file."""
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError as error:
        raise ImportError(f"reading {path} needs the `gguf` package (llama.cpp's reader): pip install gguf") from error

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: GGUF architecture {arch!r}; only 'llama' is converted here")
    hparams = {k[len("llama.") :]: _field(reader, k) for k in reader.fields if k.startswith("llama.")}
    general = {k: _field(reader, k) for k in reader.fields if k.startswith("general.")}
    heads = {"q": int(hparams["attention.head_count"]), "k": int(hparams["attention.head_count_kv"])}
    tensors, unknown = {}, []
    for tensor in reader.tensors:
        name = _hf_name(tensor.name)
        if name is None:
            unknown.append(tensor.name)
            continue
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        for kind, n_head in heads.items():
            if f".attn_{kind}." in tensor.name:
                weight = unpermute_rotary_rows(weight, n_head)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(weight).copy())
    if unknown:
        raise ValueError(f"{path}: GGUF tensors with no transformers name: {unknown[:10]} ({len(unknown)} total)")
    template = _field(reader, "tokenizer.chat_template") if "tokenizer.chat_template" in reader.fields else None
    return LlamaGGUF(hparams, general, template, tensors)

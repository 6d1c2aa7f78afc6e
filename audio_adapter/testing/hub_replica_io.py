"""File writing shared by the offline hub replicas (`hub_replicas.py`, `hub_replica_qwen2_5_vl.py`).

What every Qwen VL repository on the hub has in common is written here once: JSON files, bf16 weights under
the legacy key names in numbered shards with an index, and the real Qwen BPE tokenizer (``tokenizer.json``,
``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) with a family's added tokens at their real ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch

from ..processing.tokenizer import QWEN_BPE_RANKS

# 5.x module names -> the legacy names the hub's Qwen2-VL / Qwen2.5-VL safetensors use.
_LEGACY_QWEN_VL_KEYS = (
    (re.compile(r"^model\.language_model\."), "model."),
    (re.compile(r"^model\.visual\."), "visual."),
)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def legacy_qwen_vl_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A 5.x Qwen(2|2.5)-VL model's state dict as the hub stores it: legacy key names, bf16."""
    state = {}
    for key, tensor in model.state_dict().items():
        for pattern, legacy in _LEGACY_QWEN_VL_KEYS:
            key = pattern.sub(legacy, key)
        state[key] = tensor.detach().to(torch.bfloat16)
    return state


def save_sharded(directory: Path, state: dict[str, torch.Tensor], shards: int) -> None:
    """``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, as the hub shards them (the 7B
    Qwen VL checkpoints: five files)."""
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
    write_json(
        directory / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )


def _replica_tokenizer_files(special: tuple[str, ...], plain: tuple[str, ...]) -> Path:
    """A cached folder with a real Qwen ``tokenizer.json``, ``vocab.json`` and ``merges.txt``: the full
    151,643-rank BPE, then the ``special`` added tokens, then the ``plain`` (non-special) ones, ids in that order;
    no audio tokens. Converting the BPE takes seconds, so it is done once per machine and token list (under
    ``$AUDIO_VLM_CACHE``, like `build_qwen_tokenizer`)."""
    from tokenizers import AddedToken

    from ..processing.tokenizer import _cache_dir, _convert_bpe, _qwen_tiktoken_file, publish_cache_dir

    source = _qwen_tiktoken_file()
    digest = hashlib.sha1(f"{source.stat().st_size}:replica:v3:{special}:{plain}".encode()).hexdigest()[:10]
    cached = _cache_dir() / f"qwen-vl-replica-tokenizer-{digest}"
    if (cached / "tokenizer.json").is_file():
        return cached
    backend = _convert_bpe(source, QWEN_BPE_RANKS)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if plain:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
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
    write_json(tmp / "vocab.json", spec["model"]["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    publish_cache_dir(tmp, cached)
    return cached


def write_qwen_tokenizer(directory: Path, special: tuple[str, ...], plain: tuple[str, ...] = ()) -> None:
    """Copy the cached tokenizer files (see `_replica_tokenizer_files`) into ``directory``."""
    source = _replica_tokenizer_files(special, plain)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(source / name, directory / name)


def added_tokens_decoder(special: tuple[str, ...], plain: tuple[str, ...] = ()) -> dict[str, dict]:
    """``tokenizer_config.json``'s ``added_tokens_decoder``: ``special`` from id 151,643 on, then ``plain``."""
    return {
        str(QWEN_BPE_RANKS + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": i < len(special),
        }
        for i, token in enumerate(special + plain)
    }

"""The trained audio projector + audio-token rows as one safetensors file (``projector.safetensors``).

Layout: every tensor of ``model.audio_projector.state_dict()`` under the prefix ``audio_projector.`` (the
linear projector is the single key ``audio_projector.weight``; ``stack_mlp`` has several), the three
audio-token embedding rows (``<|audio_bos|>``, ``<|AUDIO|>``, ``<|audio_eos|>``, trained delta merged) under
``audio_token_embeddings``, and metadata: the format, the rows' token ids, the stage and the projector type.
Loading is strict: a key missing or left over, a shape or a projector type that does not fit the model raises
ValueError naming them and the file. Files written before the projector type was recorded are linear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

PROJECTOR_FILE = "projector.safetensors"
PROJECTOR_PREFIX = "audio_projector."
TOKEN_ROWS_KEY = "audio_token_embeddings"
FORMAT = "audio_vlm_projector/2"  # /1: the same without "projector_type" (always a linear projector)


def audio_token_ids(config) -> list[int]:
    """[<|audio_bos|>, <|AUDIO|>, <|audio_eos|>] ids of an `AudioVLMConfig`."""
    return [int(config.audio_bos_token_id), int(config.audio_token_id), int(config.audio_eos_token_id)]


def projector_type(config) -> str:
    """The projector type an `AudioVLMConfig` builds (configs without the field: the linear projector)."""
    return str(getattr(config, "projector_type", None) or "linear")


def save_projector_file(
    path, projector: nn.Module, token_ids: Sequence[int], token_rows: torch.Tensor, stage: int, kind: str
) -> None:
    """Write ``projector``'s whole state dict (floating tensors as float32) + ``token_rows`` (n, hidden)."""
    from safetensors.torch import save_file

    tensors = {
        PROJECTOR_PREFIX + k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in projector.state_dict().items()
    }
    tensors[TOKEN_ROWS_KEY] = token_rows.detach().float().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "audio_token_ids": json.dumps(list(map(int, token_ids))),
        "stage": str(stage),
        "projector_type": kind,
    }
    save_file(tensors, str(path), metadata=metadata)


def read_projector_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a projector file, or of the one in a stage output directory."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / PROJECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: init_from must be a stage output directory or its {PROJECTOR_FILE}")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    return tensors, metadata


def _check_projector_state(path, tensors: dict, metadata: dict, model) -> dict[str, torch.Tensor]:
    """The file's projector state dict (prefix removed) after checking it fits ``model.audio_projector``."""
    saved_kind, kind = metadata.get("projector_type", "linear"), projector_type(model.config)
    if saved_kind != kind:
        raise ValueError(f"{path}: a {saved_kind!r} projector; this model's projector is {kind!r}")
    expected = model.audio_projector.state_dict()
    state = {k[len(PROJECTOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(PROJECTOR_PREFIX)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: projector tensors do not fit this model's {kind!r} projector: missing "
            f"{[PROJECTOR_PREFIX + k for k in missing]}, unexpected {[PROJECTOR_PREFIX + k for k in unexpected]}"
        )
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape}
    if shapes:
        detail = ", ".join(f"{PROJECTOR_PREFIX}{k}: file {got}, model {want}" for k, (got, want) in shapes.items())
        raise ValueError(f"{path}: projector shapes do not fit this model's projector ({detail})")
    return state


@torch.no_grad()
def load_projector_file(model, path) -> None:
    """Put a saved projector (and audio-token rows) into ``model`` (an `AudioVLMForConditionalGeneration`)."""
    path = Path(path) / PROJECTOR_FILE if Path(path).is_dir() else Path(path)  # errors name the file itself
    tensors, metadata = read_projector_file(path)
    state = _check_projector_state(path, tensors, metadata, model)
    model.audio_projector.load_state_dict(state, strict=True)  # copies, casting to the model's dtypes
    if TOKEN_ROWS_KEY in tensors:
        ids = json.loads(metadata.get("audio_token_ids", "null") or "null")
        expected = audio_token_ids(model.config)
        if ids != expected:
            raise ValueError(f"{path}: audio token ids {ids} differ from this model's {expected}")
        emb = model.get_input_embeddings().weight
        rows = tensors[TOKEN_ROWS_KEY]
        if rows.shape != (len(expected), emb.shape[1]):
            raise ValueError(
                f"{path}: audio token rows {tuple(rows.shape)} do not fit the embedding {tuple(emb.shape)}"
            )
        emb[expected] = rows.to(emb.dtype)

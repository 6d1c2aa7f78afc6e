"""Remember a FROZEN encoder's output per window, so a clip seen again (the next epoch, the next training run,
evaluation) skips the encoder.

A frozen Whisper gives the same states for the same log-mel window every time, and on a CPU it dominates a
step once windows are padded to 30 s (Whisper tiny.en: ~0.3 s a window on 2 AVX2 cores). `cache_encoder_outputs`
wraps one model instance's `encode_audio_windows`: each window is keyed by its bytes (features and mask) and
the encoder's own identity (a digest of its weights, its dtype and the encoding mode), and only the frames its
audio tokens use are kept (``frames_per_token * tokens`` of them: a few MB for hundreds of short clips). The
store is per process and shared by every model wrapped with the same encoder weights, so the stage runs of one
job and its evaluation encode each clip once.

Returned states follow `AudioVLMForConditionalGeneration.encode_audio_windows`'s real-frames contract:
(num_chunks, T, d_audio) with T the longest window's kept frames and zeros past a shorter window's own; pooling
and the projector read only each window's first `audio_token_lengths` tokens, so the result is bit-identical to
the uncached one (a test checks it). A trainable encoder is refused: its outputs change every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from .audio_lengths import window_token_count

_STORES: dict[str, dict[bytes, torch.Tensor]] = {}  # encoder identity -> window key -> (frames, d_audio) states


def encoder_identity(model) -> str:
    """Digest of what fixes the encoder's output: its weights' bytes, dtype and the real-frames setting."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.audio_tower.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}".encode())  # the bytes alone could read the same in two dtypes
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(str(bool(model.config.audio_encode_real_frames_only)).encode())
    return digest.hexdigest()


def _window_key(features: torch.Tensor, mask: torch.Tensor | None) -> bytes:
    digest = hashlib.sha1(features.detach().cpu().contiguous().numpy().tobytes())
    if mask is not None:
        digest.update(mask.detach().cpu().to(torch.uint8).contiguous().numpy().tobytes())
    return digest.digest()


def kept_frames(model, input_features_mask: torch.Tensor | None, num_chunks: int, window: int) -> list[int]:
    """Encoder frames each window's audio tokens are made from: ``frames_per_token * tokens``, at most
    ``window`` (the encoder's output length)."""
    per_token = model.config.audio_frames_per_token
    if input_features_mask is None:
        return [window] * num_chunks
    tokens = window_token_count(input_features_mask.long().sum(-1).cpu(), per_token)
    return [min(window, per_token * int(t)) for t in tokens]


def cache_encoder_outputs(model) -> dict[bytes, torch.Tensor]:
    """Wrap ``model.encode_audio_windows`` (this instance only) with the per-window store; returns the store.

    Raises:
        ValueError: a parameter of ``model.audio_tower`` requires grad (its outputs are not fixed).
    """
    trainable = [n for n, p in model.audio_tower.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(
            f"the encoder output cache needs a frozen encoder, but audio_tower.{trainable[0]} requires grad "
            "(freeze it: model.audio_tower.requires_grad_(False))"
        )
    if getattr(model.encode_audio_windows, "_encoder_output_cache", None) is not None:
        return model.encode_audio_windows._encoder_output_cache
    store = _STORES.setdefault(encoder_identity(model), {})
    model.encode_audio_windows = _cached(model, model.encode_audio_windows, store)
    return store


def _cached(model, encode: Callable, store: dict[bytes, torch.Tensor]) -> Callable:
    def encode_audio_windows(input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None):
        """`encode_audio_windows` through the store: (num_chunks, T, d_audio), see the module docstring."""
        n = input_features.shape[0]
        keys = [_window_key(input_features[i], None if input_features_mask is None else input_features_mask[i])
                for i in range(n)]  # fmt: skip
        missing = [i for i, k in enumerate(keys) if k not in store]
        if missing:
            mask = None if input_features_mask is None else input_features_mask[missing]
            states = encode(input_features[missing], mask)
            keep = kept_frames(model, mask, len(missing), states.shape[1])
            for row, (i, frames) in enumerate(zip(missing, keep)):
                store[keys[i]] = states[row, :frames].detach().clone()
        rows = [store[k] for k in keys]
        out = rows[0].new_zeros(n, max(r.shape[0] for r in rows), rows[0].shape[-1])
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return out

    encode_audio_windows._encoder_output_cache = store
    return encode_audio_windows

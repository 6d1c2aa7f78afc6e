"""Partial YaRN: stretch only the audio spans' positions, and rotate low frequencies by the stretched ones.

Positions (method note, "Positions"): an audio span starting at p with n tokens is mapped onto a target
length T, token j going to ``p + j * (T - 1) / (n - 1)``; every later token moves back by ``n - T``.
Without VLAT, T is the base audio context and spans shorter than it are left alone; with VLAT, T is the
virtual length and every span is remapped (stretch or compress). Everything is expressed as OFFSETS
(stretched = raw - offset) so that it does not matter where the span starts (left padding, images before it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from extension.rope import cos_sin_from_angles, rope_angles


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps 10k-token cumulative shifts exact; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _as_int(value: object) -> int | None:
    """The int value of an integer-like (int, numpy int, 0-dim int tensor), None for anything else."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    try:
        return value.__index__()
    except TypeError:  # tensors with more than one element, float tensors
        return None


def _check_audio_mask(audio_mask: torch.Tensor) -> None:
    if audio_mask.dtype != torch.bool:
        raise ValueError(f"audio_mask must be a bool tensor, got dtype {audio_mask.dtype}")
    if audio_mask.ndim != 2:
        raise ValueError(f"audio_mask must be (B, L), got shape {tuple(audio_mask.shape)}")


def _target_lengths(
    base_audio_tokens: int,
    virtual_audio_tokens: float | torch.Tensor | None,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[int, torch.Tensor | None]:
    """Validated base length, and the per-sample virtual length as (B, 1) (None when no VLAT length is given)."""
    base = _as_int(base_audio_tokens)
    if base is None or base < 1:
        raise ValueError(f"base_audio_tokens must be an int >= 1, got {base_audio_tokens!r}")
    if virtual_audio_tokens is None:
        return base, None
    virtual = torch.as_tensor(virtual_audio_tokens).to(device=device, dtype=dtype)
    if virtual.ndim == 0:
        virtual = virtual.expand(batch)
    if virtual.ndim != 1 or virtual.shape[0] not in (1, batch):
        raise ValueError(
            f"virtual_audio_tokens must be a number or a (B,) = ({batch},) tensor, got shape {tuple(virtual.shape)}"
        )
    if not torch.isfinite(virtual).all() or (virtual < 1).any():
        raise ValueError(f"virtual_audio_tokens must be finite and >= 1, got {virtual.tolist()}")
    return base, virtual.expand(batch)[:, None]


def _span_offsets(
    audio_mask: torch.Tensor,
    base_audio_tokens: int,
    virtual_audio_tokens: float | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`audio_span_offsets` in the internal working dtype (float64 where available)."""
    _check_audio_mask(audio_mask)
    batch, length = audio_mask.shape
    device = audio_mask.device
    dtype = _work_dtype(device)
    base, virtual = _target_lengths(base_audio_tokens, virtual_audio_tokens, batch, device, dtype)
    if length == 0:
        return torch.zeros(batch, 0, dtype=dtype, device=device), audio_mask.clone()

    idx = torch.arange(length, device=device).expand(batch, length)
    prev = torch.zeros_like(audio_mask)
    prev[:, 1:] = audio_mask[:, :-1]
    nxt = torch.zeros_like(audio_mask)
    nxt[:, :-1] = audio_mask[:, 1:]
    is_start = audio_mask & ~prev
    is_end = audio_mask & ~nxt
    # For an audio token: index of its span's first token (running max of starts seen so far) and of its
    # last token (running min of ends, scanning from the right). Meaningless off the mask, never used there.
    start_idx = torch.where(is_start, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    end_idx = torch.where(is_end, idx, torch.full_like(idx, length)).flip(1).cummin(dim=1).values.flip(1)
    n = (end_idx - start_idx + 1).to(dtype)
    j = (idx - start_idx).to(dtype)

    if virtual is None:
        target = torch.full((batch, 1), float(base), dtype=dtype, device=device)
        remapped = audio_mask & (n >= base)
    else:
        target = virtual
        remapped = audio_mask.clone()

    # Slope of the linspace; a 1-token span sits at p (linspace with one step).
    slope = torch.where(n > 1, (target - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    # j - j*slope is exactly 0 when T == n, so a virtual length equal to the real one changes nothing.
    in_span = torch.where(remapped, j * (1 - slope), torch.zeros_like(n))
    shift = torch.where(remapped & is_end, n - target, torch.zeros_like(n))
    # Exclusive cumulative sum: a span's own shift applies only to the tokens after it.
    before = shift.cumsum(dim=1) - shift
    return before + in_span, remapped


def audio_span_offsets(
    audio_mask: torch.Tensor,
    base_audio_tokens: int,
    virtual_audio_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token position offsets of the audio-only stretch (stretched = raw - offsets).

    Args:
        audio_mask: (B, L) bool; each maximal run of True in a row is one audio span.
        base_audio_tokens: base audio context T in tokens (>= 1); spans with n >= T are squeezed onto T
            positions, shorter ones are untouched (when no virtual length is given).
        virtual_audio_tokens: VLAT virtual length (>= 1), a number or a (B,) tensor; when given, EVERY span
            is mapped onto that many positions regardless of n (stretch or compress).

    Returns:
        offsets: (B, L) float32; inside a remapped span ``j * (1 - (T - 1) / (n - 1))`` plus the shifts of
            earlier spans; after a span the accumulated ``sum(n - T)`` (negative when VLAT spreads a span).
        remapped_mask: (B, L) bool, True on tokens of remapped spans.
    """
    offsets, remapped = _span_offsets(audio_mask, base_audio_tokens, virtual_audio_tokens)
    return offsets.float(), remapped


def stretch_positions(
    position_ids: torch.Tensor,
    audio_mask: torch.Tensor,
    base_audio_tokens: int,
    virtual_audio_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Stretched positions: audio spans squeezed (or, under VLAT, mapped) onto their target length.

    Args:
        position_ids: (B, L) or (3, B, L) raw positions (M-RoPE t/h/w rows). Within an audio span raw
            positions must advance by 1 per token, as they do for text-like tokens.
        audio_mask: (B, L) bool, True on audio tokens; padding must be False.
        base_audio_tokens, virtual_audio_tokens: see `audio_span_offsets`.

    Returns:
        float32 tensor of the shape of ``position_ids``. With 3 rows the same offset is applied to every
        row: audio tokens have equal t/h/w, and later (vision) tokens shift identically on all axes.
    """
    if position_ids.ndim not in (2, 3) or (position_ids.ndim == 3 and position_ids.shape[0] != 3):
        raise ValueError(f"position_ids must be (B, L) or (3, B, L), got shape {tuple(position_ids.shape)}")
    if tuple(position_ids.shape[-2:]) != tuple(audio_mask.shape):
        raise ValueError(
            f"audio_mask shape {tuple(audio_mask.shape)} does not match position_ids (B, L) = "
            f"{tuple(position_ids.shape[-2:])}"
        )
    offsets, _ = _span_offsets(audio_mask.to(position_ids.device), base_audio_tokens, virtual_audio_tokens)
    # Subtract in the working dtype and round once, not twice.
    return (position_ids.to(offsets.dtype) - offsets).float()


def _checked_cutoff(
    inv_freq: torch.Tensor,
    position_ids: torch.Tensor,
    stretched_position_ids: torch.Tensor,
    audio_mask: torch.Tensor,
    cutoff: int,
    temperature: float,
) -> int:
    """The arguments of `partial_yarn_cos_sin` checked (ValueError naming the bad one); the cutoff as an int."""
    half = inv_freq.shape[-1]
    if inv_freq.ndim != 1:
        raise ValueError(f"inv_freq must be (D/2,), got shape {tuple(inv_freq.shape)}")
    cutoff_value = _as_int(cutoff)
    if cutoff_value is None or not 0 <= cutoff_value <= half:
        raise ValueError(f"cutoff must be an int in [0, head_dim/2 = {half}], got {cutoff!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if position_ids.shape != stretched_position_ids.shape:
        raise ValueError(
            f"position_ids {tuple(position_ids.shape)} and stretched_position_ids "
            f"{tuple(stretched_position_ids.shape)} must have the same shape"
        )
    _check_audio_mask(audio_mask)
    if tuple(audio_mask.shape) != tuple(position_ids.shape[-2:]):
        raise ValueError(
            f"audio_mask shape {tuple(audio_mask.shape)} does not match positions (B, L) = "
            f"{tuple(position_ids.shape[-2:])}"
        )
    return cutoff_value


def partial_yarn_cos_sin(
    inv_freq: torch.Tensor,
    position_ids: torch.Tensor,
    stretched_position_ids: torch.Tensor,
    audio_mask: torch.Tensor,
    cutoff: int,
    temperature: float,
    mrope_section: Sequence[int] | None = None,
    attention_scaling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of Partial YaRN: two frequency groups split at ``cutoff`` plus an audio attention temperature.

    Args:
        inv_freq: (D/2,) RoPE inverse frequencies (index 0 = highest frequency).
        position_ids: (B, L) or (3, B, L) raw positions, used for frequency indices i < cutoff
            (extrapolation: local distances stay exact).
        stretched_position_ids: same shape, used for i >= cutoff (interpolation).
        audio_mask: (B, L) bool; cos and sin of these tokens are multiplied by 1/sqrt(temperature), so
            audio-audio logits scale by 1/t and text-audio by 1/sqrt(t).
        cutoff: int in [0, D/2]; 0 with temperature 1 is Partial PI.
        temperature: > 0.
        mrope_section: required for 3-row positions (see `rope_angles`).
        attention_scaling: multiplies every cos/sin (the rotary module's own scaling; 1.0 for default RoPE).

    Returns:
        (cos, sin), each (B, L, D) float32 in the ``cat(freqs, freqs)`` layout.
    """
    cutoff = _checked_cutoff(inv_freq, position_ids, stretched_position_ids, audio_mask, cutoff, temperature)
    half = inv_freq.shape[-1]

    # Skip the group that is empty: cutoff 0 (Partial PI) needs no raw angles at all.
    if cutoff == 0:
        angles = rope_angles(inv_freq, stretched_position_ids, mrope_section)
    elif cutoff == half:
        angles = rope_angles(inv_freq, position_ids, mrope_section)
    else:
        raw = rope_angles(inv_freq, position_ids, mrope_section)
        stretched = rope_angles(inv_freq, stretched_position_ids, mrope_section)
        angles = torch.cat((raw[..., :cutoff], stretched[..., cutoff:]), dim=-1)

    audio_scale = 1.0 / math.sqrt(float(temperature))
    scale = torch.where(
        audio_mask.to(angles.device),
        torch.tensor(audio_scale * float(attention_scaling), dtype=torch.float32, device=angles.device),
        torch.tensor(float(attention_scaling), dtype=torch.float32, device=angles.device),
    )
    return cos_sin_from_angles(angles, scale)

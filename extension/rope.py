"""Shared RoPE helpers: rotation angles from (possibly fractional, possibly M-RoPE) positions, and cos/sin.

Everything is computed in float32: stretched positions are fractional, and the cos/sin of a stretched
token must not depend on the dtype the model runs in.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _check_inv_freq(inv_freq: torch.Tensor, batch: int) -> torch.Tensor:
    """(D/2,) or (B, D/2) -> (B or 1, 1, D/2) float32, ready to broadcast against (B, L, 1) positions."""
    if inv_freq.ndim == 1:
        return inv_freq.float()[None, None, :]
    if inv_freq.ndim == 2:
        if inv_freq.shape[0] not in (1, batch):
            raise ValueError(f"per-sample inv_freq has batch {inv_freq.shape[0]}, positions have batch {batch}")
        return inv_freq.float()[:, None, :]
    raise ValueError(f"inv_freq must be (D/2,) or (B, D/2), got shape {tuple(inv_freq.shape)}")


def _check_mrope_section(mrope_section: Sequence[int] | None, half_dim: int) -> list[int]:
    if mrope_section is None:
        raise ValueError("position_ids with 3 rows (M-RoPE t/h/w) need mrope_section, got None")
    section = [int(s) for s in mrope_section]
    if any(s < 0 for s in section) or sum(section) != half_dim:
        raise ValueError(f"mrope_section {list(mrope_section)} must be non-negative and sum to head_dim/2 = {half_dim}")
    return section


def rope_angles(
    inv_freq: torch.Tensor,
    position_ids: torch.Tensor,
    mrope_section: Sequence[int] | None = None,
) -> torch.Tensor:
    """Rotation angles ``position * inv_freq`` per token and frequency.

    Args:
        inv_freq: (D/2,) shared, or (B, D/2) per sample (whole-context baselines scale per sample).
        position_ids: (B, L) int or float, or (3, B, L) M-RoPE t/h/w rows.
        mrope_section: for 3-row positions, chunk sizes of the frequency axis (sum D/2, e.g. [16, 24, 24]);
            chunk k takes its positions from row k % 3, exactly as transformers'
            ``Qwen2VLRotaryEmbedding.recomposition_frequencies``. Ignored for (B, L) positions.

    Returns:
        (B, L, D/2) float32 angles; frequency index i stays at index i (M-RoPE only picks the row).
    """
    if position_ids.ndim == 2:
        batch = position_ids.shape[0]
        freqs = _check_inv_freq(inv_freq, batch)
        return position_ids.float()[..., None] * freqs
    if position_ids.ndim == 3 and position_ids.shape[0] == 3:
        batch = position_ids.shape[1]
        freqs = _check_inv_freq(inv_freq, batch)
        section = _check_mrope_section(mrope_section, freqs.shape[-1])
        positions = position_ids.float()
        # Multiply each chunk by its own row only: no (3, B, L, D/2) intermediate for long sequences.
        chunks = []
        start = 0
        for k, size in enumerate(section):
            chunks.append(positions[k % 3][..., None] * freqs[..., start : start + size])
            start += size
        return torch.cat(chunks, dim=-1)
    raise ValueError(f"position_ids must be (B, L) or (3, B, L), got shape {tuple(position_ids.shape)}")


def cos_sin_from_angles(
    angles: torch.Tensor,
    scale: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin in transformers' ``cat(freqs, freqs)`` layout.

    Args:
        angles: (B, L, D/2) float angles.
        scale: None, a float (e.g. YaRN's attention scaling), or a (B, L) tensor multiplying both cos and
            sin of each token (attention temperature on audio tokens, per-sample YaRN scaling).

    Returns:
        (cos, sin), each (B, L, D) float32.
    """
    if angles.ndim != 3:
        raise ValueError(f"angles must be (B, L, D/2), got shape {tuple(angles.shape)}")
    emb = torch.cat((angles, angles), dim=-1).float()
    cos, sin = emb.cos(), emb.sin()
    if scale is None:
        return cos, sin
    if isinstance(scale, torch.Tensor):
        if scale.shape != angles.shape[:2]:
            raise ValueError(f"scale tensor must be (B, L) = {tuple(angles.shape[:2])}, got shape {tuple(scale.shape)}")
        factor = scale.to(device=cos.device, dtype=torch.float32)[..., None]
        return cos * factor, sin * factor
    return cos * float(scale), sin * float(scale)

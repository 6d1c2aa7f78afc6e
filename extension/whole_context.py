"""Whole-context baselines of the paper's Table 1: PI and YaRN applied to every position, per sample.

s = audio tokens / base audio tokens (at least 1). Scaling the frequencies instead of the positions keeps
the position tensors untouched, so each sample of a batch can carry its own s.
"""

from __future__ import annotations

import math

import torch
from transformers.modeling_rope_utils import _compute_yarn_parameters


def _check_factor(factor: torch.Tensor) -> torch.Tensor:
    factor = torch.as_tensor(factor)
    if factor.ndim != 1:
        raise ValueError(f"factor must be a (B,) tensor, got shape {tuple(factor.shape)}")
    if not torch.isfinite(factor).all() or (factor <= 0).any():
        raise ValueError(f"factor must be finite and > 0, got {factor.tolist()}")
    return factor


def context_factor(audio_tokens: torch.Tensor, base_audio_tokens: int) -> torch.Tensor:
    """Whole-context scale s = max(1, audio_tokens / base_audio_tokens).

    Args:
        audio_tokens: (B,) number of audio tokens per sample.
        base_audio_tokens: base audio context in tokens (>= 1).

    Returns:
        (B,) float32.
    """
    is_number = isinstance(base_audio_tokens, (int, float)) and not isinstance(base_audio_tokens, bool)
    if not is_number or base_audio_tokens <= 0:
        raise ValueError(f"base_audio_tokens must be > 0, got {base_audio_tokens!r}")
    audio_tokens = torch.as_tensor(audio_tokens)
    if audio_tokens.ndim != 1:
        raise ValueError(f"audio_tokens must be a (B,) count tensor, got shape {tuple(audio_tokens.shape)}")
    if (audio_tokens < 0).any():
        raise ValueError(f"audio_tokens must be >= 0, got {audio_tokens.tolist()}")
    return (audio_tokens.double() / float(base_audio_tokens)).clamp(min=1.0).float()


def whole_pi_inv_freq(inv_freq: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Whole Position Interpolation: inv_freq / s (same angles as dividing every position by s).

    Args:
        inv_freq: (D/2,) base inverse frequencies.
        factor: (B,) scale s per sample (> 0).

    Returns:
        (B, D/2) float32.
    """
    if inv_freq.ndim != 1:
        raise ValueError(f"inv_freq must be (D/2,), got shape {tuple(inv_freq.shape)}")
    factor = _check_factor(factor).to(device=inv_freq.device, dtype=torch.float32)
    return inv_freq.float()[None, :] / factor[:, None]


def _default_inv_freq(theta: float, head_dim: int) -> torch.Tensor:
    # Same expression as transformers' default RoPE, so s == 1 is bit-identical to the stock rotary.
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


class _YarnConfig:
    """The few attributes `_compute_yarn_parameters` reads from a model config."""

    def __init__(
        self, theta: float, head_dim: int, factor: float, original_max: int, beta_fast: float, beta_slow: float
    ):
        self.head_dim = head_dim
        self.hidden_size = head_dim
        self.num_attention_heads = 1
        self.max_position_embeddings = int(math.ceil(original_max * factor))
        self.rope_parameters = {
            "rope_type": "yarn",
            "rope_theta": theta,
            "factor": factor,
            "original_max_position_embeddings": original_max,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
        }

    def standardize_rope_params(self) -> None:
        # Already in the standard (v5) layout.
        return None


# Keyed by every argument; s repeats across decode steps and batches, so a handful of entries suffice.
_YARN_CACHE: dict[tuple[float, int, float, int, float, float], tuple[torch.Tensor, float]] = {}
_YARN_CACHE_SIZE = 256


def _yarn_for_factor(
    theta: float, head_dim: int, factor: float, original_max: int, beta_fast: float, beta_slow: float
) -> tuple[torch.Tensor, float]:
    """(D/2,) YaRN inv_freq and attention scaling for one s (cached by value)."""
    key = (theta, head_dim, factor, original_max, beta_fast, beta_slow)
    cached = _YARN_CACHE.get(key)
    if cached is not None:
        return cached
    if factor <= 1.0:
        result = (_default_inv_freq(theta, head_dim), 1.0)
    else:
        config = _YarnConfig(theta, head_dim, factor, original_max, beta_fast, beta_slow)
        inv_freq, attention_factor = _compute_yarn_parameters(config)
        result = (inv_freq.float(), float(attention_factor))
    if len(_YARN_CACHE) >= _YARN_CACHE_SIZE:
        _YARN_CACHE.clear()
    _YARN_CACHE[key] = result
    return result


def whole_yarn_inv_freq(
    inv_freq_base_theta: float,
    head_dim: int,
    factor: torch.Tensor,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole YaRN (standard, 3 frequency groups with a linear ramp), per sample, via transformers' YaRN.

    Args:
        inv_freq_base_theta: RoPE base theta.
        head_dim: rotary head dimension D (even).
        factor: (B,) scale s per sample; s <= 1 means no extension (default inv_freq, scaling 1).
        original_max_position_embeddings: the context the ramp boundaries are measured against.
        beta_fast, beta_slow: YaRN ramp boundaries in rotations (32 and 1 in the paper).

    Returns:
        inv_freq (B, D/2) float32 and attention_scaling (B,) float32 (0.1 * ln(s) + 1, or 1 for s <= 1).
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}")
    if not (math.isfinite(inv_freq_base_theta) and inv_freq_base_theta > 1):
        raise ValueError(f"inv_freq_base_theta must be a finite number > 1, got {inv_freq_base_theta!r}")
    if original_max_position_embeddings <= 0:
        raise ValueError(f"original_max_position_embeddings must be > 0, got {original_max_position_embeddings!r}")
    if beta_fast <= 0 or beta_slow <= 0:
        raise ValueError(f"beta_fast and beta_slow must be > 0, got {beta_fast!r}, {beta_slow!r}")
    factor = _check_factor(factor)
    rows, scales = [], []
    for s in factor.tolist():
        inv_freq, scaling = _yarn_for_factor(
            float(inv_freq_base_theta),
            head_dim,
            float(s),
            int(original_max_position_embeddings),
            float(beta_fast),
            float(beta_slow),
        )
        rows.append(inv_freq)
        scales.append(scaling)
    device = factor.device
    if not rows:
        return torch.zeros(0, head_dim // 2, device=device), torch.zeros(0, device=device)
    return torch.stack(rows).to(device), torch.tensor(scales, dtype=torch.float32, device=device)

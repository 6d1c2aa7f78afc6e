"""Audio-aware M-RoPE: any stock M-RoPE rotary (Qwen2-VL family) plus the paper's audio-only context extension.

Generation only hands the rotary module ``(x, position_ids)``, and grows ``position_ids`` by adding
``arange`` to the last column of every row. So everything extension-specific travels inside
``position_ids`` as extra rows (an "extended position tensor", shape (9, B, L), float32):

    row 0      text position (what stock Qwen2-VL keeps in row 0 of its (4, B, L) tensor)
    rows 1-3   raw M-RoPE t/h/w positions (stock)
    rows 4-6   stretched t/h/w positions (Partial YaRN / VLAT; equal to raw otherwise)
    row 7      text + remapped-audio flag   (1 on tokens of stretched audio spans; gets the temperature)
    row 8      text + (context factor - 1)  (per-sample s of the whole-context baselines; 1 otherwise)

Rows 7 and 8 are stored as differences from row 0 because generation's ``+arange`` keeps a difference
unchanged: newly generated tokens inherit the last prompt token's value (flag 0, the sample's s). Beam
expansion, batching and padding therefore need no state on any module.

`audio_aware_rotary(StockRotary)` builds the audio-aware class over any stock M-RoPE rotary class (one with
``inv_freq``, ``mrope_section``, ``attention_scaling``, ``original_max_seq_len`` and ``config.rope_parameters``,
as Qwen2-VL's and Qwen2.5-VL's have); the model mixin swaps it in for the stock module it finds.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

from extension import AudioContextExtension
from extension.rope import cos_sin_from_angles, rope_angles
from extension.whole_context import whole_pi_inv_freq, whole_yarn_inv_freq

EXTENDED_POSITION_ROWS = 9


def pack_extended_positions(
    text_positions: torch.Tensor,
    raw_positions: torch.Tensor,
    stretched_positions: torch.Tensor,
    remapped_audio_mask: torch.Tensor,
    context_factor: torch.Tensor,
) -> torch.Tensor:
    """(B, L), (3, B, L), (3, B, L), (B, L) bool, (B,) -> (9, B, L) float32 extended position tensor."""
    text = text_positions.float()
    flag_row = text + remapped_audio_mask.float()
    factor_row = text + (context_factor.float()[:, None] - 1.0)
    return torch.cat(
        [text[None], raw_positions.float(), stretched_positions.float(), flag_row[None], factor_row[None]], dim=0
    )


def is_extended_positions(position_ids: torch.Tensor | None) -> bool:
    return position_ids is not None and position_ids.ndim == 3 and position_ids.shape[0] == EXTENDED_POSITION_ROWS


class AudioRotaryMixin:
    """Put before a stock M-RoPE rotary class: stock behaviour for stock position tensors, the context
    extension of `self.extension` for extended (9-row) ones. `inv_freq` is never modified (transformers
    re-initialises rotary buffers on load), so Whole YaRN frequencies are derived per call."""

    def __init__(self, config, extension: AudioContextExtension | None = None):
        super().__init__(config)
        self.extension = extension or AudioContextExtension()
        self.extension.validate_for_head_dim(self.inv_freq.numel() * 2)
        self._row_cache: dict[tuple[int, str], torch.Tensor] = {}

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not is_extended_positions(position_ids):
            return super().forward(x, position_ids)
        with torch.no_grad():
            cos, sin = self._extended_cos_sin(position_ids.to(x.device))
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def _extended_cos_sin(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=packed.device, dtype=torch.float32)
        ext = self.extension
        if not ext.is_whole:
            # Partial methods, and "none" under VLAT training (interpolate every frequency, no temperature).
            cutoff = ext.effective_cutoff if ext.is_partial else 0
            temperature = ext.effective_temperature if ext.is_partial else 1.0
            return self._partial_cos_sin(packed, inv_freq, cutoff, temperature)
        text, raw = packed[0], packed[1:4]
        # Every token of a sample carries the same factor; the last column is always a real token.
        context_factor = (packed[8] - text)[:, -1] + 1.0
        if ext.method == "whole_pi":
            angles = rope_angles(whole_pi_inv_freq(inv_freq, context_factor), raw, self.mrope_section)
            return cos_sin_from_angles(angles, self.attention_scaling)
        per_sample_inv_freq, scaling = whole_yarn_inv_freq(
            float(self.config.rope_parameters["rope_theta"]),
            inv_freq.numel() * 2,
            context_factor,
            int(self.original_max_seq_len),
        )
        angles = rope_angles(per_sample_inv_freq, raw, self.mrope_section)
        return cos_sin_from_angles(angles, scaling[:, None].expand_as(text))

    def _frequency_rows(self, cutoff: int, device: torch.device) -> torch.Tensor:
        """(D/2,) row of the extended tensor each frequency reads: raw t/h/w (rows 1-3) below the cutoff,
        stretched t/h/w (rows 4-6) from it on; the axis follows `mrope_section` (chunk k -> axis k % 3)."""
        key = (cutoff, str(device))
        if key not in self._row_cache:
            axes = torch.cat([torch.full((size,), k % 3) for k, size in enumerate(self.mrope_section)])
            first_row = torch.where(torch.arange(axes.numel()) < cutoff, 1, 4)
            self._row_cache[key] = (first_row + axes).to(device)
        return self._row_cache[key]

    def _partial_cos_sin(
        self, packed: torch.Tensor, inv_freq: torch.Tensor, cutoff: int, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same values as `extension.partial_yarn.partial_yarn_cos_sin` on the unpacked rows, in one gather
        and one multiply: decode steps run this per token, so it must cost what stock RoPE costs."""
        positions = packed.index_select(0, self._frequency_rows(cutoff, packed.device))  # (D/2, B, L)
        angles = positions.permute(1, 2, 0) * inv_freq
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if temperature != 1.0:
            # scale = attention_scaling, or attention_scaling / sqrt(t) on remapped audio; built from Python
            # floats on the device (a host-made scalar tensor would be a host-to-device copy every decode step)
            remapped_audio = ((packed[7] - packed[0]) > 0.5)[..., None]
            audio_scale = self.attention_scaling / math.sqrt(temperature)
            scale = torch.where(remapped_audio, audio_scale, float(self.attention_scaling))
            return cos * scale, sin * scale
        if self.attention_scaling != 1.0:
            return cos * self.attention_scaling, sin * self.attention_scaling
        return cos, sin


@functools.cache
def audio_aware_rotary(stock_rotary: type[nn.Module]) -> type[nn.Module]:
    """``class AudioAware<Stock>(AudioRotaryMixin, stock_rotary)``, one class per stock class.

    The class is bound in this module under its name so that models holding it pickle (DDP spawn, deepcopy)."""
    if issubclass(stock_rotary, AudioRotaryMixin):
        return stock_rotary
    name = f"AudioAware{stock_rotary.__name__}"
    cls = type(name, (AudioRotaryMixin, stock_rotary), {"__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


# Bound at import (not only when a model is built), so that a pickled Qwen2-VL model unpickles in a fresh process.
audio_aware_rotary(Qwen2VLRotaryEmbedding)

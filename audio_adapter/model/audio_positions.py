"""`AudioPositionsMixin`: extended (9-row) position tensors for audio spans, for any Qwen2-VL-family model.

Part of `AudioVLMMixin` (see `audio_mixin.py`, which lists the transformers internals used here:
``model.compute_3d_position_ids``, ``model.rope_deltas``). The row layout is documented in `rotary.py`.
"""

from __future__ import annotations

import torch

from extension.partial_yarn import audio_span_offsets
from extension.whole_context import context_factor

from .rotary import pack_extended_positions
from .transformers_hooks import cache_kwarg


class AudioPositionsMixin:
    """Stretches audio spans (Partial YaRN / VLAT / whole-context factors) into extended position tensors."""

    # Keyword arguments of the stock ``model.compute_3d_position_ids`` that forward passes through from its
    # own inputs (a family whose M-RoPE needs more, e.g. Qwen2.5-VL's ``second_per_grid_ts``, extends this).
    mrope_position_kwargs: tuple[str, ...] = ("image_grid_thw", "video_grid_thw", "mm_token_type_ids")

    def _text_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, past: int) -> torch.Tensor:
        batch, length = input_ids.shape
        if attention_mask is not None and attention_mask.ndim == 2:
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
            return positions[:, -length:]
        return torch.arange(past, past + length, device=input_ids.device).expand(batch, -1)

    def extended_position_ids(
        self,
        input_ids: torch.Tensor,
        raw_positions: torch.Tensor,
        text_positions: torch.Tensor,
        virtual_audio_tokens: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Stretch the audio spans of ``input_ids`` (B, L) and pack a (9, B, L) extended position tensor.

        ``raw_positions`` (3, B, L) are the stock M-RoPE positions of the same tokens. The stretch is a pure
        function of the token sequence, so prefill, full forwards and cache continuations agree."""
        audio_mask = input_ids == self.config.audio_token_id
        offsets, remapped = audio_span_offsets(audio_mask, self.base_audio_tokens, virtual_audio_tokens)
        offsets = offsets.to(raw_positions.device)
        stretched = raw_positions.float() - offsets[None]
        factor = context_factor(audio_mask.sum(-1), self.base_audio_tokens).to(raw_positions.device)
        if not self.context_extension.is_whole:
            factor = torch.ones_like(factor)
        self._last_extension_state = (offsets[:, -1].detach(), factor.detach())
        return pack_extended_positions(text_positions, raw_positions, stretched, remapped, factor)

    def _uses_extended_positions(self, virtual_audio_tokens) -> bool:
        return self.context_extension.method != "none" or virtual_audio_tokens is not None

    def _forward_position_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache,
        inputs_embeds: torch.Tensor | None,
        virtual_audio_tokens,
        mrope_kwargs: dict,
    ) -> torch.Tensor:
        """Extended positions for a forward given no ``position_ids``; ``mrope_kwargs``: the forward's values of
        `mrope_position_kwargs` (grids, token types) for the stock M-RoPE positions of a prompt."""
        past = cache.get_seq_length() if cache is not None else 0
        text = self._text_positions(input_ids, attention_mask, past)
        if past == 0:
            raw = self.model.compute_3d_position_ids(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                **cache_kwarg(None),  # Qwen2.5-VL's has no default
                **mrope_kwargs,
            )
            raw = text[None].expand(3, -1, -1) if raw is None else raw
            return self.extended_position_ids(input_ids, raw, text, virtual_audio_tokens)
        # Decoding without explicit positions: new tokens are text after everything already cached.
        deltas = self.model.rope_deltas
        raw = text[None].expand(3, -1, -1)
        if deltas is not None:
            raw = raw + deltas.repeat_interleave(text.shape[0] // deltas.shape[0], dim=0).to(raw.device)
        return self._continuation_positions(text, raw)

    def _continuation_positions(self, text: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """Extended positions for new text tokens whose audio is already in the cache (last prefill's state)."""
        batch = text.shape[0]
        if self._last_extension_state is None:
            shift, factor = torch.zeros(batch), torch.ones(batch)
        else:
            shift, factor = self._last_extension_state
        shift = shift.to(raw.device).repeat_interleave(batch // shift.shape[0], dim=0)
        factor = factor.to(raw.device).repeat_interleave(batch // factor.shape[0], dim=0)
        stretched = raw.float() - shift[None, :, None]
        no_audio = torch.zeros_like(text, dtype=torch.bool)
        return pack_extended_positions(text, raw, stretched, no_audio, factor)

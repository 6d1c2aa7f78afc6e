"""`AudioGenerationMixin`: the `generate()` hooks that keep audio alive through generation (any VLM family).

Part of `AudioVLMMixin` (see `audio_mixin.py`, which lists the private transformers hooks overridden here:
``_maybe_prepare_encoder_kwargs_for_generation``, ``_prefill``, ``_expand_multimodal_outputs``,
``_prepare_position_ids_for_generation``). Audio is encoded once, before beam / return-sequence expansion,
and expanded per sample, as the stock model does for images.
"""

from __future__ import annotations

from .audio_checks import check_placeholder_count
from .transformers_hooks import STOCK_CACHE_ARGUMENT

AUDIO_ENCODER_OUTPUT_KEY = "audio"


class AudioGenerationMixin:
    """Overrides of GenerationMixin / stock VLM generation hooks; each calls the stock hook first or last."""

    def _maybe_prepare_encoder_kwargs_for_generation(
        self, inputs_tensor, model_kwargs, model_input_name, generation_config
    ):
        """Encode audio once, before beam / num_return_sequences expansion, and keep it per sample.

        ``input_features``' first dimension counts windows, not samples, so the generic ``repeat_interleave``
        expansion would scramble it; instead the projected frames are split by each row's placeholder count
        and expanded per sample in `_expand_multimodal_outputs`."""
        model_kwargs = super()._maybe_prepare_encoder_kwargs_for_generation(
            inputs_tensor, model_kwargs, model_input_name, generation_config
        )
        input_features = model_kwargs.pop("input_features", None)
        input_features_mask = model_kwargs.pop("input_features_mask", None)
        if input_features is None:
            return model_kwargs
        input_ids = model_kwargs.get("input_ids")
        if input_ids is None or input_ids.shape[1] == 0:
            input_ids = inputs_tensor
        audio_embeds = self.get_audio_features(input_features, input_features_mask)
        per_sample = (input_ids == self.config.audio_token_id).sum(-1).tolist()
        check_placeholder_count(sum(per_sample), audio_embeds.shape[0], self.config.audio_token_id)
        mm_encoder_outputs = dict(model_kwargs.get("mm_encoder_outputs") or {})
        mm_encoder_outputs[AUDIO_ENCODER_OUTPUT_KEY] = list(audio_embeds.split(per_sample, dim=0))
        model_kwargs["mm_encoder_outputs"] = mm_encoder_outputs
        return model_kwargs

    def _prefill(self, input_ids, generation_config, model_kwargs, is_first_iteration: bool = True):
        """Stock prefill, after checking that the prompt's uncached placeholders come with audio.

        The check runs once per `generate`, in eager mode, so no decode step (compiled or not) carries it.
        Assistant calls (``is_first_iteration`` False) continue a prompt the main model already checked."""
        audio = (model_kwargs.get("mm_encoder_outputs") or {}).get(AUDIO_ENCODER_OUTPUT_KEY)
        if is_first_iteration and audio is None and input_ids.ndim == 2 and input_ids.shape[1]:
            cache = model_kwargs.get(STOCK_CACHE_ARGUMENT)
            past = int(cache.get_seq_length()) if cache is not None else 0
            mask = model_kwargs.get("attention_mask")
            mask_length = mask.shape[1] if mask is not None else getattr(generation_config, "_mask_length", -1)
            # as stock `_prefill` slices: the full history is given when it matches the mask's length
            uncached = input_ids[:, past:] if past and mask_length == input_ids.shape[1] else input_ids
            self._check_placeholders_have_audio(uncached)
        if not model_kwargs.get("use_cache", True) and input_ids.ndim == 2:
            # Without a cache every step re-reads the whole sequence: only the prompt holds placeholders.
            model_kwargs["audio_prompt_length"] = input_ids.shape[1]
        return super()._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=is_first_iteration)

    def _expand_multimodal_outputs(self, input_ids, mm_encoder_output, expand_size=1, inputs_embeds=None):
        audio = mm_encoder_output.pop(AUDIO_ENCODER_OUTPUT_KEY, None)
        mm_encoder_output = super()._expand_multimodal_outputs(input_ids, mm_encoder_output, expand_size, inputs_embeds)
        if audio is not None:
            mm_encoder_output[AUDIO_ENCODER_OUTPUT_KEY] = [frames for frames in audio for _ in range(expand_size)]
        return mm_encoder_output

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        position_ids = super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
        if self.context_extension.method == "none":
            return position_ids
        input_ids = model_kwargs.get("input_ids")
        if input_ids is None or input_ids.shape[1] == 0:
            input_ids = inputs_tensor
        if position_ids.shape[0] == 1:
            # the stock shortcut for a continuation with a cache: one row, text positions + rope_deltas
            raw = position_ids.expand(3, -1, -1)
            text = position_ids[0] - self.model.rope_deltas.to(position_ids.device)
        else:
            text, raw = position_ids[0], position_ids[1:]
        if input_ids.ndim == 2 and input_ids.shape[1] == text.shape[1]:
            return self.extended_position_ids(input_ids, raw, text)
        # Continuation given only the new tokens: audio sits in the cache, reuse the last prefill's state.
        return self._continuation_positions(text, raw)

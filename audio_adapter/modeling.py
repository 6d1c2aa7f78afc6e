"""`AudioVLMForConditionalGeneration`: stock Qwen2-VL plus a frozen Whisper encoder and a linear projector.

Only a few methods change. `forward` splices projected audio frames at the ``<|AUDIO|>`` placeholders and,
when a context extension is active, builds extended position tensors (see `rotary.py`). Generation hooks
encode audio once before beam/return-sequence expansion and expand it per sample, as Qwen2-VL does
for images.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForImageTextToText, Qwen2VLForConditionalGeneration
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from extension import AudioContextExtension
from extension.partial_yarn import audio_span_offsets
from extension.whole_context import context_factor

from .audio_lengths import window_mel_frames, window_token_lengths
from .configuration import AudioVLMConfig
from .real_frames import encode_real_frames, real_mel_frames
from .rotary import AudioAwareRotaryEmbedding, pack_extended_positions

AUDIO_ENCODER_OUTPUT_KEY = "audio"


def pool_audio_frames(frames: torch.Tensor, pool_stride: int) -> torch.Tensor:
    """(N, T, d) encoder frames -> (N, ceil(T / pool_stride), d), averaging runs of `pool_stride` frames."""
    if pool_stride == 1:
        return frames
    return F.avg_pool1d(frames.transpose(1, 2), pool_stride, pool_stride, ceil_mode=True).transpose(1, 2)


class AudioVLMForConditionalGeneration(Qwen2VLForConditionalGeneration):
    config_class = AudioVLMConfig
    input_modalities = ("image", "video", "audio", "text")
    # The Whisper encoder is a frozen feature extractor; its weights are never trained here.
    _keys_to_ignore_on_load_unexpected = [r"^audio_tower\.decoder\.", r"^proj_out\."]

    def __init__(self, config: AudioVLMConfig):
        super().__init__(config)
        self.audio_tower = WhisperEncoder(config.audio_config)
        self.audio_tower.requires_grad_(False)
        self.audio_projector = nn.Linear(config.audio_config.d_model, config.text_config.hidden_size, bias=False)
        self.model.language_model.rotary_emb = AudioAwareRotaryEmbedding(
            config.text_config, config.get_context_extension()
        )
        # (shift, context factor) per sample of the last extended prefill, for decode calls that pass no
        # position_ids (manual loops). generate() never relies on it: its positions carry both.
        self._last_extension_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "audio_projector", None):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.text_config.initializer_range)
            return
        if getattr(self, "audio_tower", None) is not None and any(module is m for m in self.audio_tower.modules()):
            # Whisper's own initialisation (sinusoidal positions etc.), not the language model's.
            self.audio_tower._init_weights(module)
            return
        super()._init_weights(module)

    # ------------------------------------------------------------------ context extension
    @property
    def context_extension(self) -> AudioContextExtension:
        return self.model.language_model.rotary_emb.extension

    def set_context_extension(self, extension: AudioContextExtension | None = None, **settings) -> None:
        """Switch the audio context extension on a loaded model; the setting is saved with the config."""
        if extension is None:
            extension = AudioContextExtension(**settings)
        elif settings:
            raise ValueError(f"pass either an AudioContextExtension or keyword settings, not both: {settings}")
        head_dim = self.model.language_model.rotary_emb.inv_freq.numel() * 2
        extension.validate_for_head_dim(head_dim)
        self.model.language_model.rotary_emb.extension = extension
        self.config.context_extension = extension.to_dict()

    @property
    def base_audio_tokens(self) -> int:
        return self.context_extension.base_audio_tokens(self.config.audio_tokens_per_second)

    # ------------------------------------------------------------------ audio encoding
    def audio_token_lengths(self, input_features_mask: torch.Tensor | None, num_chunks: int) -> torch.Tensor:
        """Tokens each encoder window contributes: (num_chunks,) long (`audio_lengths.window_token_lengths`).
        No mask means every frame is real audio."""
        return window_token_lengths(
            input_features_mask,
            num_chunks,
            self.config.audio_config.max_source_positions,
            self.config.audio_frames_per_token,
        )

    def get_audio_features(
        self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode log-mel windows and project the frames that cover real audio.

        Args:
            input_features: (num_chunks, num_mel_bins, 2 * max_source_positions) log-mel windows, in clip order.
            input_features_mask: (num_chunks, 2 * max_source_positions), 1 on mel frames of real audio.
        Returns:
            (total_audio_tokens, hidden_size): the valid frames of all windows, concatenated in order.
        """
        self._check_audio_features(input_features, input_features_mask)
        tower_dtype = self.audio_tower.conv1.weight.dtype
        encoder_trainable = any(p.requires_grad for p in self.audio_tower.parameters())
        with torch.set_grad_enabled(encoder_trainable and torch.is_grad_enabled()):
            frames = self.encode_audio_windows(input_features.to(tower_dtype), input_features_mask)
        frames = pool_audio_frames(frames, self.config.audio_pool_stride)
        lengths = self.audio_token_lengths(input_features_mask, frames.shape[0]).to(frames.device)
        valid = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]
        valid_frames = frames[valid]
        return self.audio_projector(valid_frames.to(self.audio_projector.weight.dtype))

    def encode_audio_windows(
        self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Whisper encoder states of log-mel windows: (num_chunks, T, d_audio), frames in window order.

        Padded (default): the whole window, T = max_source_positions. With
        `config.audio_encode_real_frames_only`, each window only over the mel frames covering its real audio
        (`real_frames.py`; outputs differ from the padded ones): T = the longest window's frames, zeros past
        a shorter window's own. Either way the first `audio_token_lengths` pooled frames are the tokens."""
        if not self.config.audio_encode_real_frames_only or input_features_mask is None:
            return self.audio_tower(input_features).last_hidden_state
        mel_frames = real_mel_frames(
            input_features_mask.long().sum(-1), self.config.audio_frames_per_token, input_features.shape[-1]
        )
        return encode_real_frames(self.audio_tower, input_features, mel_frames)

    def _check_audio_features(self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None) -> None:
        audio_config = self.config.audio_config
        if input_features.ndim != 3:
            raise ValueError(
                f"input_features must be (num_chunks, num_mel_bins, frames), got shape {tuple(input_features.shape)}"
            )
        if input_features.shape[1] != audio_config.num_mel_bins:
            raise ValueError(
                f"input_features has {input_features.shape[1]} mel bins but the audio encoder expects "
                f"{audio_config.num_mel_bins}"
            )
        expected_frames = window_mel_frames(audio_config.max_source_positions)
        if input_features.shape[2] != expected_frames:
            raise ValueError(
                f"input_features windows have {input_features.shape[2]} frames but the audio encoder expects "
                f"{expected_frames}"
            )
        if input_features_mask is not None and input_features_mask.shape != input_features.shape[::2]:
            raise ValueError(
                f"input_features_mask shape {tuple(input_features_mask.shape)} does not match input_features "
                f"{tuple(input_features.shape)} (expected {tuple(input_features.shape[::2])})"
            )
        if not torch.isfinite(input_features.sum()) and not torch.isfinite(input_features).all():
            bad = int((~torch.isfinite(input_features)).sum())
            raise ValueError(f"input_features contains {bad} non-finite values (NaN or Inf)")

    def _splice_audio(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, audio_embeds: torch.Tensor
    ) -> torch.Tensor:
        audio_mask = input_ids == self.config.audio_token_id
        n_placeholders, n_frames = int(audio_mask.sum()), audio_embeds.shape[0]
        if n_placeholders != n_frames:
            raise ValueError(
                f"audio placeholder count ({n_placeholders} <|AUDIO|> tokens) does not match the number of audio "
                f"feature frames ({n_frames}); expand placeholders with AudioVLMProcessor"
            )
        audio_embeds = audio_embeds.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(audio_mask[..., None].expand_as(inputs_embeds), audio_embeds)

    # ------------------------------------------------------------------ positions
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
        input_ids,
        attention_mask,
        past_key_values,
        image_grid_thw,
        video_grid_thw,
        mm_token_type_ids,
        inputs_embeds,
        virtual_audio_tokens,
    ) -> torch.Tensor:
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        text = self._text_positions(input_ids, attention_mask, past)
        if past == 0:
            raw = self.model.compute_3d_position_ids(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                image_grid_thw=image_grid_thw,
                video_grid_thw=video_grid_thw,
                attention_mask=attention_mask,
                past_key_values=None,
                mm_token_type_ids=mm_token_type_ids,
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

    # ------------------------------------------------------------------ placeholders without audio
    @staticmethod
    def _is_prompt_forward(past_key_values) -> bool:
        """Whether this forward starts a sequence (no cache, or one holding nothing yet), in eager mode.

        Only a prompt's ``<|AUDIO|>`` tokens are placeholders that need audio; tokens fed after a cached prefix
        (decode steps, assisted-decoding candidates, an ``<|AUDIO|>`` the model generated) are text, as in stock
        Qwen2-VL. Decided from Python state alone: no device sync in eager decoding, and a constant under
        torch.compile / torch.export, so traced graphs carry no data-dependent branch (`generate` checks its
        prompt before prefill instead, in `_prefill`)."""
        if torch.compiler.is_compiling():
            return False
        return past_key_values is None or not getattr(past_key_values, "is_initialized", True)

    def _check_placeholders_have_audio(self, input_ids: torch.Tensor) -> None:
        """Raise if the prompt tokens ``input_ids`` (B, L) hold ``<|AUDIO|>`` placeholders (no audio was given)."""
        n = int((input_ids == self.config.audio_token_id).sum())
        if n:
            raise ValueError(
                f"input_ids contain {n} <|AUDIO|> placeholder tokens but no audio was given (input_features is None)"
            )

    def _zero_audio_contribution(self) -> torch.Tensor | None:
        """0-valued scalar that depends on every trainable audio parameter (None when none trains).

        Added to a training batch without audio, it gives those parameters a (zero) gradient, so under DDP
        without ``find_unused_parameters`` every rank reduces the same parameters and stays in step. A sum of
        parameters, not an encoder pass: it costs nothing and covers the projector (and whatever else of the
        audio path is unfrozen)."""
        trainable = [p for m in (self.audio_tower, self.audio_projector) for p in m.parameters() if p.requires_grad]
        if not trainable:
            return None
        device = self.audio_projector.weight.device
        return torch.stack([p.sum().float().to(device) for p in trainable]).sum() * 0.0

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        input_features: torch.FloatTensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        virtual_audio_tokens: torch.Tensor | None = None,
        **kwargs,
    ):
        r"""Stock Qwen2-VL forward plus audio.

        input_features (`(num_chunks, num_mel_bins, 2 * max_source_positions)`): log-mel windows of every clip
            in the batch, in order (a clip longer than one window spans several consecutive chunks).
        input_features_mask (`(num_chunks, 2 * max_source_positions)`): 1 on mel frames of real audio.
        virtual_audio_tokens (`(batch,)` or float): VLAT virtual length per sample (training only).
        """
        mm_encoder_outputs = dict(mm_encoder_outputs) if mm_encoder_outputs else None
        pre_encoded = mm_encoder_outputs.pop(AUDIO_ENCODER_OUTPUT_KEY, None) if mm_encoder_outputs else None
        if input_features is not None and pre_encoded is not None:
            raise ValueError("pass either input_features or pre-encoded audio in mm_encoder_outputs, not both")
        audio_embeds = None
        if input_features is not None:
            audio_embeds = self.get_audio_features(input_features, input_features_mask)
        elif pre_encoded is not None:
            audio_embeds = torch.cat(list(pre_encoded), dim=0)

        if input_ids is not None:
            if audio_embeds is not None:
                if inputs_embeds is None:
                    inputs_embeds = self.get_input_embeddings()(input_ids)
                inputs_embeds = self._splice_audio(input_ids, inputs_embeds, audio_embeds)
            elif self._is_prompt_forward(past_key_values):
                self._check_placeholders_have_audio(input_ids)
            if position_ids is None and self._uses_extended_positions(virtual_audio_tokens):
                position_ids = self._forward_position_ids(
                    input_ids,
                    attention_mask,
                    past_key_values,
                    image_grid_thw,
                    video_grid_thw,
                    mm_token_type_ids,
                    inputs_embeds,
                    virtual_audio_tokens,
                )
        elif audio_embeds is not None:
            raise ValueError("audio inputs need input_ids to locate the <|AUDIO|> placeholders")

        if audio_embeds is None and self.training and torch.is_grad_enabled():
            zero = self._zero_audio_contribution()
            if zero is not None and (input_ids is not None or inputs_embeds is not None):
                if inputs_embeds is None:
                    inputs_embeds = self.get_input_embeddings()(input_ids)
                inputs_embeds = inputs_embeds + zero.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)

        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )

    # ------------------------------------------------------------------ generation plumbing
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
        if sum(per_sample) != audio_embeds.shape[0]:
            raise ValueError(
                f"audio placeholder count ({sum(per_sample)} <|AUDIO|> tokens) does not match the number of audio "
                f"feature frames ({audio_embeds.shape[0]})"
            )
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
            cache = model_kwargs.get("past_key_values")
            past = int(cache.get_seq_length()) if cache is not None else 0
            mask = model_kwargs.get("attention_mask")
            mask_length = mask.shape[1] if mask is not None else getattr(generation_config, "_mask_length", -1)
            # as stock `_prefill` slices: the full history is given when it matches the mask's length
            uncached = input_ids[:, past:] if past and mask_length == input_ids.shape[1] else input_ids
            self._check_placeholders_have_audio(uncached)
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
            # Qwen2-VL's shortcut for a continuation with a cache: one row, text positions + rope_deltas
            raw = position_ids.expand(3, -1, -1)
            text = position_ids[0] - self.model.rope_deltas.to(position_ids.device)
        else:
            text, raw = position_ids[0], position_ids[1:]
        if input_ids.ndim == 2 and input_ids.shape[1] == text.shape[1]:
            return self.extended_position_ids(input_ids, raw, text)
        # Continuation given only the new tokens: audio sits in the cache, reuse the last prefill's state.
        return self._continuation_positions(text, raw)


# Stock Qwen2-VL checkpoints use legacy key names; the renames are looked up by class name, and a class
# defined outside transformers gets none unless registered (otherwise the LM would load silently random).
register_checkpoint_conversion_mapping(
    AudioVLMForConditionalGeneration.__name__,
    get_checkpoint_conversion_mapping("Qwen2VLForConditionalGeneration"),
    overwrite=True,
)
AutoModelForImageTextToText.register(AudioVLMConfig, AudioVLMForConditionalGeneration, exist_ok=True)

"""`AudioVLMMixin`: everything that gives a stock Qwen2-VL-family VLM ears, independent of the family.

A family is ``class AudioX(AudioVLMMixin, StockXForConditionalGeneration)`` (see `audio_adapter/families/`).
The mixin builds the frozen Whisper encoder (``audio_tower``) and the projector (``audio_projector``,
`projector.py`), swaps the stock rotary for its audio-aware subclass (`rotary.py`), splices projected audio
at the ``<|AUDIO|>`` placeholders in `forward`, builds extended positions when a context extension is active
(`audio_positions.py`) and keeps audio alive through `generate()` (`audio_generation.py`). With no audio and
no extension every call goes to the stock class unchanged.

It relies on a few transformers internals of the stock class; they are listed, per supported release, in
`transformers_hooks.py` (`PRIVATE_TRANSFORMERS_HOOKS`), which the tests check on every registered family. The KV
cache arrives as ``cache`` (transformers 5.24 and later) or ``past_key_values`` (5.23), and is handed on under the
installed release's own name.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from extension import AudioContextExtension

from ..encoders.audio_lengths import window_token_lengths
from ..encoders.real_frames import encode_real_frames, real_mel_frames
from .audio_checks import check_audio_features, check_placeholder_count, check_placeholders_have_audio
from .audio_generation import AUDIO_ENCODER_OUTPUT_KEY, AudioGenerationMixin
from .audio_positions import AudioPositionsMixin
from .projector import build_audio_projector
from .rotary import audio_aware_rotary
from .saved_weights import AudioWeightsLoadingMixin
from .transformers_hooks import PRIVATE_TRANSFORMERS_HOOKS, cache_kwarg, resolve_cache_argument

__all__ = ["PRIVATE_TRANSFORMERS_HOOKS", "AudioVLMMixin", "pool_audio_frames"]


def pool_audio_frames(frames: torch.Tensor, pool_stride: int) -> torch.Tensor:
    """(N, T, d) encoder frames -> (N, ceil(T / pool_stride), d), averaging runs of `pool_stride` frames."""
    if pool_stride == 1:
        return frames
    return F.avg_pool1d(frames.transpose(1, 2), pool_stride, pool_stride, ceil_mode=True).transpose(1, 2)


class AudioVLMMixin(AudioWeightsLoadingMixin, AudioGenerationMixin, AudioPositionsMixin):
    """Audio encoder + projector + splice + extended positions + generation hooks over a stock VLM class;
    ``from_pretrained`` refuses a checkpoint without the audio weights (`saved_weights.py`)."""

    input_modalities = ("image", "video", "audio", "text")
    # The Whisper encoder is a frozen feature extractor; its weights are never trained here.
    _keys_to_ignore_on_load_unexpected = [r"^audio_tower\.decoder\.", r"^proj_out\."]

    def __init__(self, config):
        super().__init__(config)
        self.audio_tower = WhisperEncoder(config.audio_config)
        self.audio_tower.requires_grad_(False)
        self.audio_projector = build_audio_projector(config)
        stock_rotary = type(self.model.language_model.rotary_emb)
        self.model.language_model.rotary_emb = audio_aware_rotary(stock_rotary)(
            config.text_config, config.get_context_extension()
        )
        # (shift, context factor) per sample of the last extended prefill, for decode calls that pass no
        # position_ids (manual loops). generate() never relies on it: its positions carry both.
        self._last_extension_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        projector = getattr(self, "audio_projector", None)
        if projector is not None and any(module is m for m in projector.modules()):
            projector.init_module(module)  # each projector owns its initialisation
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
            (total_audio_tokens, hidden_size): the audio tokens of all windows, concatenated in order.
        """
        check_audio_features(self.config.audio_config, input_features, input_features_mask)
        tower_dtype = self.audio_tower.conv1.weight.dtype
        encoder_trainable = any(p.requires_grad for p in self.audio_tower.parameters())
        with torch.set_grad_enabled(encoder_trainable and torch.is_grad_enabled()):
            frames = self.encode_audio_windows(input_features.to(tower_dtype), input_features_mask)
        frames = pool_audio_frames(frames, self.config.audio_pool_stride)
        lengths = self.audio_token_lengths(input_features_mask, frames.shape[0]).to(frames.device)
        return self.audio_projector(frames, lengths)

    def encode_audio_windows(
        self, input_features: torch.Tensor, input_features_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Whisper encoder states of log-mel windows: (num_chunks, T, d_audio), frames in window order.

        Padded (default): the whole window, T = max_source_positions. With
        `config.audio_encode_real_frames_only`, each window only over the mel frames covering its real audio
        (`real_frames.py`; outputs differ from the padded ones): T = the longest window's frames, zeros past
        a shorter window's own. Either way the window's `audio_token_lengths` tokens come from its first
        frames (pooled, then stacked by the projector)."""
        if not self.config.audio_encode_real_frames_only or input_features_mask is None:
            return self.audio_tower(input_features).last_hidden_state
        mel_frames = real_mel_frames(
            input_features_mask.long().sum(-1), self.config.audio_frames_per_token, input_features.shape[-1]
        )
        return encode_real_frames(self.audio_tower, input_features, mel_frames)

    def _splice_audio(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, audio_embeds: torch.Tensor
    ) -> torch.Tensor:
        audio_mask = input_ids == self.config.audio_token_id
        n_placeholders, n_frames = int(audio_mask.sum()), audio_embeds.shape[0]
        check_placeholder_count(n_placeholders, n_frames, self.config.audio_token_id)
        audio_embeds = audio_embeds.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(audio_mask[..., None].expand_as(inputs_embeds), audio_embeds)

    # ------------------------------------------------------------------ placeholders without audio
    @staticmethod
    def _is_prompt_forward(cache) -> bool:
        """Whether this forward starts a sequence (no cache, or one holding nothing yet), in eager mode.

        Only a prompt's ``<|AUDIO|>`` tokens are placeholders that need audio; tokens fed after a cached prefix
        (decode steps, assisted-decoding candidates, an ``<|AUDIO|>`` the model generated) are text, as in the
        stock model. Decided from Python state alone: no device sync in eager decoding, and a constant under
        torch.compile / torch.export, so traced graphs carry no data-dependent branch (`generate` checks its
        prompt before prefill instead, in `_prefill`)."""
        if torch.compiler.is_compiling():
            return False
        return cache is None or not getattr(cache, "is_initialized", True)

    def _check_placeholders_have_audio(self, input_ids: torch.Tensor) -> None:
        """Raise if the prompt tokens ``input_ids`` (B, L) hold ``<|AUDIO|>`` placeholders (no audio was given)."""
        check_placeholders_have_audio(input_ids, self.config.audio_token_id)

    def _zero_audio_contribution(self) -> torch.Tensor | None:
        """0-valued scalar that depends on every trainable audio parameter (None when none trains).

        Added to a training batch without audio, it gives those parameters a (zero) gradient, so under DDP
        without ``find_unused_parameters`` every rank reduces the same parameters and stays in step. A sum of
        parameters, not an encoder pass: it costs nothing and covers the projector (any type) and whatever
        else of the audio path is unfrozen."""
        trainable = [p for m in (self.audio_tower, self.audio_projector) for p in m.parameters() if p.requires_grad]
        if not trainable:
            return None
        device = trainable[0].device
        return torch.stack([p.sum().float().to(device) for p in trainable]).sum() * 0.0

    # ------------------------------------------------------------------ forward
    def _audio_embeds(
        self, input_features, input_features_mask, mm_encoder_outputs: dict | None
    ) -> tuple[dict | None, torch.Tensor | None]:
        """(stock mm_encoder_outputs without audio, (total_audio_tokens, hidden) audio embeddings or None)."""
        mm_encoder_outputs = dict(mm_encoder_outputs) if mm_encoder_outputs else None
        pre_encoded = mm_encoder_outputs.pop(AUDIO_ENCODER_OUTPUT_KEY, None) if mm_encoder_outputs else None
        if input_features is not None and pre_encoded is not None:
            raise ValueError("pass either input_features or pre-encoded audio in mm_encoder_outputs, not both")
        if input_features is not None:
            return mm_encoder_outputs, self.get_audio_features(input_features, input_features_mask)
        if pre_encoded is not None:
            return mm_encoder_outputs, torch.cat(list(pre_encoded), dim=0)
        return mm_encoder_outputs, None

    @staticmethod
    def _placeholder_ids(input_ids: torch.Tensor, audio_prompt_length: int | None) -> torch.Tensor:
        """``input_ids`` (B, L) as far as placeholders go: tokens from ``audio_prompt_length`` on were generated
        (`generate` without a cache re-reads them every step) and are text, so they cannot count as audio."""
        if audio_prompt_length is None or audio_prompt_length >= input_ids.shape[1]:
            return input_ids
        placeholder_ids = input_ids.clone()
        placeholder_ids[:, audio_prompt_length:] = -1
        return placeholder_ids

    def _embeds_with_audio(self, input_ids, inputs_embeds, audio_embeds, cache, placeholder_ids):
        """``inputs_embeds`` with ``audio_embeds`` spliced at the placeholders of ``placeholder_ids``; without
        audio, unchanged after checking that a prompt holds no placeholders."""
        if audio_embeds is None:
            if self._is_prompt_forward(cache):
                self._check_placeholders_have_audio(placeholder_ids)
            return inputs_embeds
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        return self._splice_audio(placeholder_ids, inputs_embeds, audio_embeds)

    def _with_zero_audio(self, input_ids, inputs_embeds):
        """Training batch without audio: add `_zero_audio_contribution` to the embeddings (DDP keeps in step)."""
        zero = self._zero_audio_contribution()
        if zero is None or (input_ids is None and inputs_embeds is None):
            return inputs_embeds
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        return inputs_embeds + zero.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
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
        past_key_values=None,
        audio_prompt_length: int | None = None,
        **kwargs,
    ):
        r"""The stock forward plus audio. Other stock inputs (Qwen2.5-VL's ``second_per_grid_ts``) pass via ``kwargs``
        (`generate()` accepts only named ones: such a family names them in its own ``forward`` override).

        input_features (`(num_chunks, num_mel_bins, 2 * max_source_positions)`): log-mel windows of every clip
            in the batch, in order (a clip longer than one window spans several consecutive chunks).
        input_features_mask (`(num_chunks, 2 * max_source_positions)`): 1 on mel frames of real audio.
        virtual_audio_tokens (`(batch,)` or float): VLAT virtual length per sample (training only).
        cache / past_key_values: the KV cache under either name (`transformers_hooks.resolve_cache_argument`).
        audio_prompt_length (int): set by `generate` without a cache: columns from here on are generated text.
        """
        cache = resolve_cache_argument(cache, past_key_values)
        stock = dict(labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        stock.update(pixel_values=pixel_values, pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw)
        stock.update(video_grid_thw=video_grid_thw, mm_token_type_ids=mm_token_type_ids)
        mm_encoder_outputs, audio_embeds = self._audio_embeds(input_features, input_features_mask, mm_encoder_outputs)
        if input_ids is not None:
            placeholder_ids = self._placeholder_ids(input_ids, audio_prompt_length)
            inputs_embeds = self._embeds_with_audio(input_ids, inputs_embeds, audio_embeds, cache, placeholder_ids)
            if position_ids is None and self._uses_extended_positions(virtual_audio_tokens):
                mrope_kwargs = {name: stock.get(name) for name in self.mrope_position_kwargs}
                position_ids = self._forward_position_ids(
                    placeholder_ids, attention_mask, cache, inputs_embeds, virtual_audio_tokens, mrope_kwargs
                )
        elif audio_embeds is not None:
            raise ValueError("audio inputs need input_ids to locate the <|AUDIO|> placeholders")
        if audio_embeds is None and self.training and torch.is_grad_enabled():
            inputs_embeds = self._with_zero_audio(input_ids, inputs_embeds)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs,
            **cache_kwarg(cache),
            **stock,
        )

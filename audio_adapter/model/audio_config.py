"""`AudioConfigMixin`: the audio fields every audio VLM config adds to its stock VLM config (any family).

A family's config is ``class AudioXConfig(AudioConfigMixin, StockVLMConfig)`` with ``sub_configs_defaults``
extended by `AUDIO_SUB_CONFIGS` (see `audio_adapter/families/`). The mixin is a dataclass so that
transformers' config dataclass machinery collects its fields like the stock ones (save, load, diff-dict).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import WhisperConfig

from extension import AudioContextExtension

from ..encoders.audio_lengths import frames_per_token, tokens_per_second
from ..encoders.whisper import WHISPER
from .projector import check_projector_settings

# openai/whisper-large-v3-turbo's encoder geometry (its decoder, 4 layers, is never built here).
WHISPER_LARGE_V3_TURBO_ENCODER = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 4,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": WHISPER.num_mel_bins,
    "max_source_positions": WHISPER.max_source_positions,
    "vocab_size": 51866,
}

# Sub-config of the audio encoder, merged into a family config's `sub_configs_defaults`.
AUDIO_SUB_CONFIGS = {"audio_config": WhisperConfig}


def _check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{key} must be a bool (true or false), got {value!r} ({type(value).__name__}); a string such as "
            "'false' would otherwise read as on"
        )


def _check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be an int >= 1, got {value!r} ({type(value).__name__})")


def _check_token_id(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a token id (an int >= 0), got {value!r} ({type(value).__name__})")


# Audio settings checked on every assignment: at construction, and when ``from_pretrained(dir, key=value)``
# sets them after the config was built (transformers applies such keyword overrides by setattr, after
# ``__post_init__``, so a check there alone would miss them).
AUDIO_FIELD_CHECKS = {
    "audio_encode_real_frames_only": _check_bool,
    "audio_pool_stride": _check_positive_int,
    "projector_stack_factor": _check_positive_int,
    "audio_bos_token_id": _check_token_id,
    "audio_token_id": _check_token_id,
    "audio_eos_token_id": _check_token_id,
}


def text_head_dim(text_config) -> int:
    """Rotary head dimension of a text config: its ``head_dim``, else hidden_size / num_attention_heads."""
    head_dim = getattr(text_config, "head_dim", None)
    return int(head_dim) if head_dim else int(text_config.hidden_size // text_config.num_attention_heads)


@dataclass(repr=False, kw_only=True)
class AudioConfigMixin:
    """`audio_config` (a `WhisperConfig`) + audio token ids + projector / extension settings.

    Token ids default to the real Qwen2-VL layout: its tokenizer ends at 151,656, so the three audio tokens
    take 151,657..151,659, inside the 152,064 embedding rows (no resize needed).
    """

    audio_config: dict | WhisperConfig | None = None
    audio_bos_token_id: int = 151657
    audio_token_id: int = 151658
    audio_eos_token_id: int = 151659
    audio_pool_stride: int = 1
    # Run the Whisper encoder only over the mel frames of real audio (faster; outputs differ from padded)
    audio_encode_real_frames_only: bool = False
    # "linear" (the paper's) or "stack_mlp" (frame stacking + RMSNorm + SwiGLU); see `projector.py`
    projector_type: str = "linear"
    projector_stack_factor: int = 1
    context_extension: dict | None = None

    def __post_init__(self, **kwargs):
        if self.audio_config is None:
            self.audio_config = dict(WHISPER_LARGE_V3_TURBO_ENCODER)
        super().__post_init__(**kwargs)
        check_projector_settings(self.projector_type, self.projector_stack_factor)
        # Validate (and normalise) the extension settings eagerly: a bad value must fail at config time,
        # including a cutoff the text model's rotary head cannot hold.
        extension = self.get_context_extension()
        extension.validate_for_head_dim(text_head_dim(self.text_config))
        self.context_extension = extension.to_dict()

    def __setattr__(self, key: str, value) -> None:
        check = AUDIO_FIELD_CHECKS.get(key)
        if check is not None:
            check(key, value)
        super().__setattr__(key, value)

    def get_context_extension(self) -> AudioContextExtension:
        return AudioContextExtension.from_dict(self.context_extension or {})

    @property
    def audio_frames_per_token(self) -> int:
        """Encoder frames behind one audio token (the length rule's divisor): pooling stride x stack factor."""
        return frames_per_token(self.audio_pool_stride, self.projector_stack_factor)

    @property
    def audio_tokens_per_second(self) -> float:
        """Audio tokens per second of real audio (`audio_lengths.tokens_per_second`)."""
        return tokens_per_second(self.audio_frames_per_token)

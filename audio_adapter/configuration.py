"""`AudioVLMConfig`: a Qwen2-VL config that also describes the audio encoder, projector and context extension."""

from __future__ import annotations

from transformers import AutoConfig, Qwen2VLConfig, WhisperConfig
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig

from extension import AudioContextExtension

from .audio_lengths import tokens_per_second, window_seconds

# openai/whisper-large-v3-turbo's encoder geometry (its decoder, 4 layers, is never built here).
WHISPER_LARGE_V3_TURBO_ENCODER = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 4,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "vocab_size": 51866,
}


class AudioVLMConfig(Qwen2VLConfig):
    """Qwen2-VL config + `audio_config` (a `WhisperConfig`) + audio token ids + projector/extension settings.

    Token ids default to the real Qwen2-VL layout: its tokenizer ends at 151,656, so the three audio tokens
    take 151,657..151,659, inside the 152,064 embedding rows (no resize needed).
    """

    model_type = "audio_vlm"
    sub_configs_defaults = {
        "vision_config": Qwen2VLVisionConfig,
        "text_config": Qwen2VLTextConfig,
        "audio_config": WhisperConfig,
    }

    audio_config: dict | WhisperConfig | None = None
    audio_bos_token_id: int = 151657
    audio_token_id: int = 151658
    audio_eos_token_id: int = 151659
    audio_pool_stride: int = 1
    # Run the Whisper encoder only over the mel frames of real audio (faster; outputs differ from padded)
    audio_encode_real_frames_only: bool = False
    context_extension: dict | None = None

    def __post_init__(self, **kwargs):
        if self.audio_config is None:
            self.audio_config = dict(WHISPER_LARGE_V3_TURBO_ENCODER)
        super().__post_init__(**kwargs)
        if int(self.audio_pool_stride) < 1:
            raise ValueError(f"audio_pool_stride must be >= 1, got {self.audio_pool_stride}")
        if not isinstance(self.audio_encode_real_frames_only, bool):
            raise ValueError(
                f"audio_encode_real_frames_only must be a bool, got {self.audio_encode_real_frames_only!r}"
            )
        # Validate (and normalise) the extension settings eagerly: a bad value must fail at config time.
        self.context_extension = self.get_context_extension().to_dict()

    def get_context_extension(self) -> AudioContextExtension:
        return AudioContextExtension.from_dict(self.context_extension or {})

    @property
    def audio_chunk_seconds(self) -> float:
        """Length of one encoder window (`audio_lengths.window_seconds`)."""
        return window_seconds(self.audio_config.max_source_positions)

    @property
    def audio_frames_per_token(self) -> int:
        """Encoder frames behind one audio token: the pooling stride (the length rule's divisor)."""
        return int(self.audio_pool_stride)

    @property
    def audio_tokens_per_second(self) -> float:
        """Audio tokens per second of real audio (`audio_lengths.tokens_per_second`)."""
        return tokens_per_second(self.audio_frames_per_token)


AutoConfig.register(AudioVLMConfig.model_type, AudioVLMConfig)

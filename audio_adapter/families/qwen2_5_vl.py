"""The Qwen2.5-VL family: `AudioQwen2_5_VLConfig` and `AudioQwen2_5_VLForConditionalGeneration` over the stock
Qwen2.5-VL classes.

All audio behaviour lives in the family-independent mixins (`audio_config.py`, `audio_mixin.py`); this file only
binds them to the stock classes and registers the result with transformers. What Qwen2.5-VL changes is handled
by the stock classes themselves (a window-attention vision tower, video time scaled by ``second_per_grid_ts``);
the one thing the mixin must know is that ``second_per_grid_ts`` is part of its M-RoPE inputs.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..model.audio_config import AUDIO_SUB_CONFIGS, AudioConfigMixin
from ..model.audio_mixin import AudioVLMMixin


class AudioQwen2_5_VLConfig(AudioConfigMixin, Qwen2_5_VLConfig):
    """Qwen2.5-VL config + `audio_config` (a `WhisperConfig`) + audio token ids + projector/extension settings.

    Token ids default to the real Qwen2.5-VL layout: its tokenizer ends at 151,664 (8 more added tokens than
    Qwen2-VL's: ``<tool_call>`` .. ``<|file_sep|>``), so the audio tokens `processing.add_audio_tokens` appends
    take 151,665..151,667, inside the 152,064 embedding rows (`loading.load_pretrained_parts` reads them from the
    tokenizer)."""

    model_type = "audio_qwen2_5_vl"
    sub_configs_defaults = {**Qwen2_5_VLConfig.sub_configs_defaults, **AUDIO_SUB_CONFIGS}

    audio_bos_token_id: int = 151665
    audio_token_id: int = 151666
    audio_eos_token_id: int = 151667


class AudioQwen2_5_VLForConditionalGeneration(AudioVLMMixin, Qwen2_5_VLForConditionalGeneration):
    """Stock Qwen2.5-VL plus a frozen Whisper encoder (``audio_tower``) and a projector (``audio_projector``)."""

    config_class = AudioQwen2_5_VLConfig
    # Qwen2.5-VL's M-RoPE spaces video frames by their duration: its positions need ``second_per_grid_ts`` too.
    mrope_position_kwargs = AudioVLMMixin.mrope_position_kwargs + ("second_per_grid_ts",)


# Stock checkpoints use legacy key names (``model.layers.*``, ``visual.*``); the renames are looked up by class name.
register_checkpoint_conversion_mapping(
    AudioQwen2_5_VLForConditionalGeneration.__name__,
    get_checkpoint_conversion_mapping("Qwen2_5_VLForConditionalGeneration"),
    overwrite=True,
)
AutoConfig.register(AudioQwen2_5_VLConfig.model_type, AudioQwen2_5_VLConfig, exist_ok=True)
AutoModelForImageTextToText.register(AudioQwen2_5_VLConfig, AudioQwen2_5_VLForConditionalGeneration, exist_ok=True)

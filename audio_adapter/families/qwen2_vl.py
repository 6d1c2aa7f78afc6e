"""The Qwen2-VL family: `AudioVLMConfig` and `AudioVLMForConditionalGeneration` over the stock Qwen2-VL classes.

All audio behaviour lives in the family-independent mixins (`audio_config.py`, `audio_mixin.py`); this file
only binds them to the stock classes and registers the result with transformers.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from ..model.audio_config import AUDIO_SUB_CONFIGS, AudioConfigMixin
from ..model.audio_mixin import AudioVLMMixin


class AudioVLMConfig(AudioConfigMixin, Qwen2VLConfig):
    """Qwen2-VL config + `audio_config` (a `WhisperConfig`) + audio token ids + projector/extension settings."""

    model_type = "audio_vlm"
    sub_configs_defaults = {**Qwen2VLConfig.sub_configs_defaults, **AUDIO_SUB_CONFIGS}


class AudioVLMForConditionalGeneration(AudioVLMMixin, Qwen2VLForConditionalGeneration):
    """Stock Qwen2-VL plus a frozen Whisper encoder (``audio_tower``) and a projector (``audio_projector``)."""

    config_class = AudioVLMConfig


# Stock Qwen2-VL checkpoints use legacy key names; the renames are looked up by class name, and a class
# defined outside transformers gets none unless registered (otherwise the LM would load silently random).
register_checkpoint_conversion_mapping(
    AudioVLMForConditionalGeneration.__name__,
    get_checkpoint_conversion_mapping("Qwen2VLForConditionalGeneration"),
    overwrite=True,
)
AutoConfig.register(AudioVLMConfig.model_type, AudioVLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(AudioVLMConfig, AudioVLMForConditionalGeneration, exist_ok=True)

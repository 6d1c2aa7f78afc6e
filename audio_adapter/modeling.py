"""Backward-compatible import path only: re-exports the Qwen2-VL model class and the audio helpers.

`AudioVLMForConditionalGeneration` is defined in `audio_adapter/families/qwen2_vl.py` (over the
family-independent `audio_mixin.AudioVLMMixin`); `pool_audio_frames` in `audio_mixin.py`;
`AUDIO_ENCODER_OUTPUT_KEY` in `audio_generation.py`. New code imports from those files.
"""

from .families.qwen2_vl import AudioVLMForConditionalGeneration
from .model.audio_generation import AUDIO_ENCODER_OUTPUT_KEY
from .model.audio_mixin import pool_audio_frames

__all__ = ["AUDIO_ENCODER_OUTPUT_KEY", "AudioVLMForConditionalGeneration", "pool_audio_frames"]

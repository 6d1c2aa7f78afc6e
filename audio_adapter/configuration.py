"""Backward-compatible import path only: re-exports the Qwen2-VL family config and the Whisper geometry.

`AudioVLMConfig` is defined in `audio_adapter/families/qwen2_vl.py` (over `audio_config.AudioConfigMixin`),
`WHISPER_LARGE_V3_TURBO_ENCODER` in `audio_config.py`. New code imports from those files.
"""

from .families.qwen2_vl import AudioVLMConfig
from .model.audio_config import WHISPER_LARGE_V3_TURBO_ENCODER

__all__ = ["WHISPER_LARGE_V3_TURBO_ENCODER", "AudioVLMConfig"]

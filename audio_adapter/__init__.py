"""Give Qwen2-VL ears: a frozen Whisper encoder + linear projector spliced into Qwen2-VL.

Public API: `AudioVLMConfig`, `AudioVLMForConditionalGeneration`, `AudioVLMProcessor`,
`load_pretrained_parts`, and `audio_adapter.testing.tiny_model_and_processor` for offline tiny models.
"""

from .configuration import AudioVLMConfig
from .loading import load_pretrained_parts, load_whisper_encoder
from .modeling import AudioVLMForConditionalGeneration
from .processing import AudioVLMProcessor, add_audio_tokens

__all__ = [
    "AudioVLMConfig",
    "AudioVLMForConditionalGeneration",
    "AudioVLMProcessor",
    "add_audio_tokens",
    "load_pretrained_parts",
    "load_whisper_encoder",
]

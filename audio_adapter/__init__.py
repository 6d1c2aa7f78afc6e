"""Give Qwen2-VL-family VLMs ears: a frozen Whisper encoder + a projector spliced into the stock VLM.

Public API: `AudioVLMConfig`, `AudioVLMForConditionalGeneration`, `AudioVLMProcessor`,
`load_pretrained_parts`, and `audio_adapter.testing.tiny_model_and_processor` for offline tiny models.
"""

from .families.qwen2_vl import AudioVLMConfig, AudioVLMForConditionalGeneration
from .pretrained.loading import load_pretrained_parts, load_whisper_encoder
from .processing.processor import AudioVLMProcessor, add_audio_tokens

__all__ = [
    "AudioVLMConfig",
    "AudioVLMForConditionalGeneration",
    "AudioVLMProcessor",
    "add_audio_tokens",
    "load_pretrained_parts",
    "load_whisper_encoder",
]

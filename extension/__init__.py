"""Audio-only context extension as pure tensor math: Partial YaRN, whole-context baselines, VLAT.

Imports only torch (and transformers' RoPE helpers for Whole YaRN); nothing else of the project.
"""

from extension.config import METHODS, AudioContextExtension
from extension.partial_yarn import audio_span_offsets, partial_yarn_cos_sin, stretch_positions
from extension.vlat import VLAT_STRATEGIES, VirtualLengthSampler

__all__ = [
    "METHODS",
    "VLAT_STRATEGIES",
    "AudioContextExtension",
    "VirtualLengthSampler",
    "audio_span_offsets",
    "partial_yarn_cos_sin",
    "stretch_positions",
]

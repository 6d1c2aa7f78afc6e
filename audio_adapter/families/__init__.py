"""Registry of VLM families: stock checkpoint ``model_type`` -> (audio config class, audio model class).

A family is one small file here (its config and model classes over the stock ones, registered with
transformers) plus one line in `FAMILIES`. `loading.load_pretrained_parts` picks the classes by the
checkpoint's ``model_type``; `audio_adapter.testing` builds tiny models of any family by name.
"""

from __future__ import annotations

from typing import NamedTuple

from transformers import PreTrainedConfig, PreTrainedModel

from .qwen2_5_vl import AudioQwen2_5_VLConfig, AudioQwen2_5_VLForConditionalGeneration
from .qwen2_vl import AudioVLMConfig, AudioVLMForConditionalGeneration


class VLMFamily(NamedTuple):
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    name: str  # for people: load summaries, errors


# stock model_type (as in a checkpoint's config.json) -> the audio classes over that family
FAMILIES: dict[str, VLMFamily] = {
    "qwen2_vl": VLMFamily(AudioVLMConfig, AudioVLMForConditionalGeneration, "Qwen2-VL"),
    "qwen2_5_vl": VLMFamily(AudioQwen2_5_VLConfig, AudioQwen2_5_VLForConditionalGeneration, "Qwen2.5-VL"),
}


def family_of(model_type: str) -> VLMFamily:
    """The family of a stock model_type, or of a saved audio model's own model_type (e.g. ``audio_vlm``)."""
    for stock, family in FAMILIES.items():
        if model_type in (stock, family.config_class.model_type):
            return family
    valid = sorted(FAMILIES) + sorted(f.config_class.model_type for f in FAMILIES.values())
    raise ValueError(f"model_type {model_type!r} is not a supported VLM family; supported: {valid}")

"""Every transformers internal this project relies on, in one place, per supported transformers release.

The project is a thin layer over stock classes, so it overrides or reads a few private hooks. Each is listed
here with the parameter names it is called with; `tests/model/test_transformers_hooks.py` and
`tests/model/test_families.py` check every entry against the installed release (and `scripts/check_upstream.sh`
against the newest one), so an upgrade that renames one fails loudly instead of silently.

The one rename so far: transformers 5.24 calls the model ``forward`` argument that carries the KV cache
``cache`` (5.23 and earlier: ``past_key_values``; the old name is deprecated, removal announced for 5.40).
The audio model accepts either name and hands the stock class the installed release's own.
"""

from __future__ import annotations

import inspect
import warnings

import transformers
from transformers import Qwen2VLForConditionalGeneration

# The name the stock model `forward` (and `generate`'s model_kwargs) give the KV cache, per minor release.
CACHE_ARGUMENT_BY_RELEASE: dict[tuple[int, int], str] = {
    (5, 23): "past_key_values",
    (5, 24): "cache",
    (5, 25): "cache",
}
DEPRECATED_CACHE_ARGUMENT = "past_key_values"


def installed_release() -> tuple[int, int]:
    """(major, minor) of the installed transformers."""
    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()))


def detect_stock_cache_argument() -> str:
    """The cache argument of the installed stock ``Qwen2VLForConditionalGeneration.forward`` (read from its
    signature; `deprecate_kwarg` keeps the wrapped function's signature)."""
    params = inspect.signature(Qwen2VLForConditionalGeneration.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise RuntimeError(
        f"transformers {transformers.__version__}: Qwen2VLForConditionalGeneration.forward takes neither `cache` "
        "nor `past_key_values`; this release is not supported (see audio_adapter/model/transformers_hooks.py)"
    )


STOCK_CACHE_ARGUMENT = detect_stock_cache_argument()


def resolve_cache_argument(cache, past_key_values):
    """The KV cache a caller gave under either name (None if neither); both at once is refused.

    The deprecated name still works on every supported release; where the installed release has renamed it,
    the caller is told, as stock transformers tells its own callers."""
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("pass the KV cache as `cache` or as `past_key_values`, not both")
    if STOCK_CACHE_ARGUMENT != DEPRECATED_CACHE_ARGUMENT:
        warnings.warn(
            f"`past_key_values` is deprecated in transformers {transformers.__version__}; pass `cache` instead",
            FutureWarning,
            stacklevel=3,
        )
    return past_key_values


def cache_kwarg(cache) -> dict:
    """``{name: cache}`` under the installed release's name, for calls into stock forward / generate."""
    return {STOCK_CACHE_ARGUMENT: cache}


def returned_cache(output):
    """The KV cache a stock model output carries (``output.cache`` on 5.24, ``output.past_key_values`` before)."""
    return output[STOCK_CACHE_ARGUMENT] if STOCK_CACHE_ARGUMENT in output else None


# Dotted path on a stock model instance -> parameter names the project passes to it (() for plain attributes).
PRIVATE_TRANSFORMERS_HOOKS: dict[str, tuple[str, ...]] = {
    "_maybe_prepare_encoder_kwargs_for_generation": (
        "inputs_tensor",
        "model_kwargs",
        "model_input_name",
        "generation_config",
    ),
    "_prefill": ("input_ids", "generation_config", "model_kwargs", "is_first_iteration"),
    "_expand_multimodal_outputs": ("input_ids", "mm_encoder_output", "expand_size", "inputs_embeds"),
    "_prepare_position_ids_for_generation": ("inputs_tensor", "model_kwargs"),
    "_update_model_kwargs_for_generation": ("outputs", "model_kwargs"),  # scripts/bench/rope.py
    "_init_weights": ("module",),
    "forward": ("input_ids", "attention_mask", "position_ids", STOCK_CACHE_ARGUMENT, "inputs_embeds"),
    "model.compute_3d_position_ids": ("input_ids", "inputs_embeds", "attention_mask", STOCK_CACHE_ARGUMENT),
    "model.rope_deltas": (),
    "model.language_model.rotary_emb": ("x", "position_ids"),
    "model.language_model.rotary_emb.inv_freq": (),
    "model.language_model.rotary_emb.mrope_section": (),
    "model.language_model.rotary_emb.attention_scaling": (),
    "model.language_model.rotary_emb.original_max_seq_len": (),
}

# Internals outside the model instance: import path -> parameter names (() for attributes / constants).
PRIVATE_TRANSFORMERS_INTERNALS: dict[str, tuple[str, ...]] = {
    # extension/whole_context.py: Whole YaRN frequencies from a stand-in config
    "transformers.modeling_rope_utils._compute_yarn_parameters": ("config",),
    # audio_generation.py `_prefill`: generate's mask length when no attention mask is given
    "transformers.generation.configuration_utils.GenerationConfig._mask_length": (),
    # families/: legacy checkpoint key renames, looked up by class name
    "transformers.conversion_mapping.get_checkpoint_conversion_mapping": ("model_type",),
    "transformers.conversion_mapping.register_checkpoint_conversion_mapping": (
        "model_type_or_class_name",
        "mapping",
        "overwrite",
    ),
    # audio_mixin.py: the frozen encoder keeps Whisper's own initialisation
    "transformers.models.whisper.modeling_whisper.WhisperEncoder._init_weights": ("module",),
    # audio_mixin.py: the full Whisper checkpoint's decoder keys, skipped on load without a warning
    "transformers.modeling_utils.PreTrainedModel._keys_to_ignore_on_load_unexpected": (),
    # scripts/bench/generate.py: the Qwen2-Audio peer's token count per clip
    "transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder._get_feat_extract_output_lengths": (
        "input_lengths",
    ),
    # processing/processor.py, testing/: the PIL image processor (no torchvision)
    "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil": (),
}

# loading.py hides transformers' own table of expected missing keys by this text in the log record.
LOAD_REPORT_TEXT = "LOAD REPORT"

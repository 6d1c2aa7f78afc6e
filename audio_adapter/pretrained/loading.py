"""Build the full model from a real VLM checkpoint (any registered family) and the ENCODER of a real Whisper one.

Both loads are checked: any missing or unexpected key raises instead of leaving weights silently random
(see the traps in docs/transformers5.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from extension import AudioContextExtension

from ..families import family_of
from ..model.saved_weights import AUDIO_WEIGHT, CheckpointMismatchError, fresh_audio_modules
from ..model.transformers_hooks import LOAD_REPORT_TEXT
from ..processing.processor import add_audio_tokens
from ..processing.tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

# Keys of a full Whisper checkpoint that are not the encoder (expected to be skipped).
_WHISPER_NON_ENCODER = re.compile(r"^(model\.decoder\.|proj_out\.)")


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return LOAD_REPORT_TEXT not in str(record.msg)


@contextlib.contextmanager
def _quiet_load_report():
    """Drop transformers' MISSING/UNEXPECTED key tables: the keys they list here are expected (new audio modules,
    the skipped Whisper decoder), and every truly missing or unexpected key raises `CheckpointMismatchError`
    below instead. Size mismatches and conversion errors still raise inside transformers."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _summary(line: str) -> None:
    """One line per load on stderr, from the first process only (not once per DDP rank)."""
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        print(line, file=sys.stderr, flush=True)


def load_whisper_encoder(whisper: str, dtype: torch.dtype | None = None, **hub_kwargs) -> WhisperEncoder:
    """Only the encoder weights of a full Whisper checkpoint (``WhisperEncoder.from_pretrained`` alone loads
    nothing: the keys carry a ``model.encoder.`` prefix)."""
    with _quiet_load_report():
        encoder, info = WhisperEncoder.from_pretrained(
            whisper,
            key_mapping={r"^model\.encoder\.": ""},
            output_loading_info=True,
            dtype=dtype,
            **hub_kwargs,
        )
    missing = list(info.get("missing_keys", []))
    skipped = [k for k in info.get("unexpected_keys", []) if _WHISPER_NON_ENCODER.match(k)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not _WHISPER_NON_ENCODER.match(k)]
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"Whisper checkpoint {whisper!r} does not match WhisperEncoder: missing {sorted(missing)[:10]} "
            f"({len(missing)} total), unexpected {sorted(unexpected)[:10]} ({len(unexpected)} total)"
        )
    encoder._skipped_checkpoint_keys = len(skipped)  # for the one-line summary of load_pretrained_parts
    return encoder


def load_pretrained_parts(
    vlm: str = "Qwen/Qwen2-VL-7B-Instruct",
    whisper: str = "openai/whisper-large-v3-turbo",
    *,
    tokenizer=None,
    audio_pool_stride: int = 1,
    projector_type: str = "linear",
    projector_stack_factor: int = 1,
    context_extension: AudioContextExtension | dict | None = None,
    dtype: torch.dtype | None = None,
    device_map: str | dict | torch.device | None = None,
    model_kwargs: dict | None = None,
    **hub_kwargs,
) -> PreTrainedModel:
    """VLM weights + Whisper encoder weights + a fresh projector -> the family's audio model.

    Args:
        vlm: VLM checkpoint (hub id or local directory) of a supported family (`families.FAMILIES`, by its
            config's ``model_type``; a Qwen2-VL checkpoint gives `AudioVLMForConditionalGeneration`).
        whisper: Whisper checkpoint; only its encoder is loaded, the decoder is never allocated in the model.
        tokenizer: tokenizer holding the audio tokens; default: the VLM's tokenizer plus `add_audio_tokens`.
            The audio token ids must fit in the embedding (the real Qwen2-VL has 407 spare rows).
        audio_pool_stride: average-pool encoder frames by this stride (1 = 50 tokens per second).
        projector_type / projector_stack_factor: the projector (`projector.py`): "linear" (the paper's) or
            "stack_mlp" stacking this many pooled frames per token.
        context_extension: audio context extension saved into the config.
        dtype: load dtype (e.g. ``torch.bfloat16`` on GPU).
        device_map: where the weights go (``"cuda"``, ``"cuda:1"``, ``"auto"``, a dict...), as for
            ``from_pretrained``; the audio encoder and projector follow the input embedding's device.
        model_kwargs: extra arguments for the VLM ``from_pretrained`` call only (e.g. a bitsandbytes
            ``quantization_config`` for QLoRA; it must skip ``audio_tower``/``audio_projector``).
        hub_kwargs: passed to every ``from_pretrained`` (``revision``, ``cache_dir``, ``local_files_only``...).
    """
    tokenizer = add_audio_tokens(
        tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(vlm, **hub_kwargs)
    )
    audio = {
        "audio_pool_stride": audio_pool_stride,
        "projector_type": projector_type,
        "projector_stack_factor": projector_stack_factor,
        "context_extension": context_extension,
    }
    config = _audio_config(vlm, whisper, tokenizer, audio, hub_kwargs)
    if device_map is not None:
        model_kwargs = {**(model_kwargs or {}), "device_map": device_map}
    model, n_vlm = _load_vlm(vlm, config, dtype, {**hub_kwargs, **(model_kwargs or {})})
    encoder = load_whisper_encoder(whisper, dtype=dtype, **hub_kwargs)
    embed_device = _attach_audio(model, encoder)
    init_new_token_rows(model, [config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    suppress_audio_tokens(model.generation_config, config)
    projector_params = sum(p.numel() for p in model.audio_projector.parameters())
    family = family_of(config.model_type).name
    _summary(
        f"audio_adapter: loaded {n_vlm} {family} tensors from {vlm} and {len(encoder.state_dict())} "
        f"Whisper encoder tensors from {whisper} (its {encoder._skipped_checkpoint_keys} decoder tensors skipped); "
        f"new: audio_projector {config.projector_type} ({projector_params:,} parameters), 3 audio-token rows; "
        f"dtype {model.dtype}, device {embed_device}"
    )
    return model


def _audio_config(vlm: str, whisper: str, tokenizer, audio: dict, hub_kwargs: dict) -> PreTrainedConfig:
    """The family's audio config: the VLM checkpoint's settings + the Whisper encoder's + the audio settings."""
    vlm_config = AutoConfig.from_pretrained(vlm, **hub_kwargs)
    family = family_of(vlm_config.model_type)
    if vlm_config.model_type == family.config_class.model_type:
        raise ValueError(
            f"vlm={vlm!r} is an audio model this toolkit saved (model_type {vlm_config.model_type!r}), not a stock "
            f"VLM checkpoint: load it whole with {family.model_class.__name__}.from_pretrained({vlm!r}) (or "
            "AutoModelForImageTextToText), or pass the stock VLM and Whisper checkpoints it was assembled from"
        )
    whisper_config = AutoConfig.from_pretrained(whisper, **hub_kwargs)  # read once: checked, then used
    if not isinstance(whisper_config, WhisperConfig):
        raise ValueError(
            f"whisper={whisper!r} is not a Whisper checkpoint (its config's model_type is "
            f"{whisper_config.model_type!r}); pass a Whisper checkpoint such as openai/whisper-large-v3-turbo"
        )
    if isinstance(audio["context_extension"], AudioContextExtension):
        audio = {**audio, "context_extension": audio["context_extension"].to_dict()}
    settings = vlm_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        settings.pop(key, None)
    config = family.config_class(
        **settings,
        audio_config=whisper_config,
        audio_bos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_BOS_TOKEN),
        audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        audio_eos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN),
        **audio,
    )
    rows = config.text_config.vocab_size
    too_big = [t for t in (config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id) if t >= rows]
    if too_big:
        raise ValueError(f"audio token ids {too_big} do not fit the {rows}-row embedding of {vlm!r}")
    return config


def _load_vlm(vlm: str, config: PreTrainedConfig, dtype, load_kwargs: dict) -> tuple[PreTrainedModel, int]:
    """(the family's audio model with the VLM checkpoint's weights, number of VLM tensors); raises on any key
    the checkpoint misses or adds beyond the new audio modules."""
    model_class = family_of(config.model_type).model_class
    with _quiet_load_report(), fresh_audio_modules():  # the audio weights come from Whisper and a new projector
        model, info = model_class.from_pretrained(
            vlm, config=config, output_loading_info=True, dtype=dtype, **load_kwargs
        )
    new_keys = [k for k in info.get("missing_keys", []) if AUDIO_WEIGHT.match(k)]
    missing = [k for k in info.get("missing_keys", []) if not AUDIO_WEIGHT.match(k)]
    unexpected = list(info.get("unexpected_keys", []))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"VLM checkpoint {vlm!r} did not load cleanly: missing {sorted(missing)[:10]} ({len(missing)} total), "
            f"unexpected {sorted(unexpected)[:10]} ({len(unexpected)} total)"
        )
    return model, len(model.state_dict()) - len(new_keys)


def _attach_audio(model: PreTrainedModel, encoder: WhisperEncoder) -> torch.device:
    """Copy the Whisper encoder weights in (frozen), freshly initialise the projector and put both where the
    input embeddings live (audio is spliced into them). Returns that device."""
    model.audio_tower.load_state_dict(encoder.state_dict(), strict=True)
    model.audio_tower.requires_grad_(False)
    model.audio_projector.reinitialize()
    embed_device = model.get_input_embeddings().weight.device
    model.audio_tower.to(embed_device)
    model.audio_projector.to(embed_device)
    return embed_device


def suppress_audio_tokens(generation_config, config) -> None:
    """Never generate ``<|audio_bos|>``, ``<|AUDIO|>`` or ``<|audio_eos|>``: an audio placeholder in the output has
    no audio behind it. ``suppress_tokens`` is saved with the generation config and honoured by every
    ``generate()`` call (transformers' ``SuppressTokensLogitsProcessor``)."""
    audio = [int(config.audio_bos_token_id), int(config.audio_token_id), int(config.audio_eos_token_id)]
    current = list(generation_config.suppress_tokens or [])
    generation_config.suppress_tokens = current + [t for t in audio if t not in current]


@torch.no_grad()
def init_new_token_rows(model: PreTrainedModel, token_ids: list[int], n_known: int | None = None) -> None:
    """Give newly added tokens the mean input (and output) embedding of the known vocabulary.

    Spare rows of a pretrained embedding are untrained (garbage or zeros); the mean row is a neutral start
    that keeps logits of the new tokens in the usual range."""
    n_known = min(token_ids) if n_known is None else n_known
    for matrix in {
        id(m): m for m in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    }.values():
        mean = matrix[:n_known].float().mean(dim=0)
        matrix[token_ids] = mean.to(matrix.dtype)

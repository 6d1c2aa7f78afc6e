"""Build the full model from a real Qwen2-VL checkpoint and the ENCODER of a real Whisper checkpoint.

Both loads are checked: any missing or unexpected key raises instead of leaving weights silently random
(see the traps in shared/design/transformers5.md).
"""

from __future__ import annotations

import re

import torch
from transformers import AutoConfig, AutoTokenizer, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from extension import AudioContextExtension

from .configuration import AudioVLMConfig
from .modeling import AudioVLMForConditionalGeneration
from .processing import add_audio_tokens
from .tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

# Keys of a full Whisper checkpoint that are not the encoder (expected to be skipped).
_WHISPER_NON_ENCODER = re.compile(r"^(model\.decoder\.|proj_out\.)")
_NEW_AUDIO_MODULES = re.compile(r"^(audio_tower|audio_projector)\.")


class CheckpointMismatchError(ValueError):
    """A checkpoint did not cover the module it was loaded into (or carried unexpected weights)."""


def load_whisper_encoder(whisper: str, dtype: torch.dtype | None = None, **hub_kwargs) -> WhisperEncoder:
    """Only the encoder weights of a full Whisper checkpoint (``WhisperEncoder.from_pretrained`` alone loads
    nothing: the keys carry a ``model.encoder.`` prefix)."""
    encoder, info = WhisperEncoder.from_pretrained(
        whisper,
        key_mapping={r"^model\.encoder\.": ""},
        output_loading_info=True,
        dtype=dtype,
        **hub_kwargs,
    )
    missing = list(info.get("missing_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if not _WHISPER_NON_ENCODER.match(k)]
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"Whisper checkpoint {whisper!r} does not match WhisperEncoder: missing {sorted(missing)[:10]} "
            f"({len(missing)} total), unexpected {sorted(unexpected)[:10]} ({len(unexpected)} total)"
        )
    return encoder


def load_pretrained_parts(
    vlm: str = "Qwen/Qwen2-VL-7B-Instruct",
    whisper: str = "openai/whisper-large-v3-turbo",
    *,
    tokenizer=None,
    audio_pool_stride: int = 1,
    context_extension: AudioContextExtension | dict | None = None,
    dtype: torch.dtype | None = None,
    model_kwargs: dict | None = None,
    **hub_kwargs,
) -> AudioVLMForConditionalGeneration:
    """Qwen2-VL weights + Whisper encoder weights + a fresh projector -> `AudioVLMForConditionalGeneration`.

    Args:
        vlm: Qwen2-VL checkpoint (hub id or local directory).
        whisper: Whisper checkpoint; only its encoder is loaded, the decoder is never allocated in the model.
        tokenizer: tokenizer holding the audio tokens; default: the VLM's tokenizer plus `add_audio_tokens`.
            The audio token ids must fit in the embedding (the real Qwen2-VL has 407 spare rows).
        audio_pool_stride: average-pool encoder frames by this stride (1 = 50 tokens per second).
        context_extension: audio context extension saved into the config.
        dtype: load dtype (e.g. ``torch.bfloat16`` on GPU).
        model_kwargs: extra arguments for the Qwen2-VL ``from_pretrained`` call only (e.g. a bitsandbytes
            ``quantization_config`` for QLoRA; it must skip ``audio_tower``/``audio_projector``).
        hub_kwargs: passed to every ``from_pretrained`` (``revision``, ``cache_dir``, ``local_files_only``...).
    """
    tokenizer = add_audio_tokens(tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(vlm, **hub_kwargs))
    vlm_config = AutoConfig.from_pretrained(vlm, **hub_kwargs)
    if vlm_config.model_type not in ("qwen2_vl", AudioVLMConfig.model_type):
        raise ValueError(f"{vlm!r} is a {vlm_config.model_type!r} checkpoint, expected qwen2_vl")
    whisper_config = WhisperConfig.from_pretrained(whisper, **hub_kwargs)
    if isinstance(context_extension, AudioContextExtension):
        context_extension = context_extension.to_dict()

    settings = vlm_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        settings.pop(key, None)
    config = AudioVLMConfig(
        **settings,
        audio_config=whisper_config,
        audio_bos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_BOS_TOKEN),
        audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        audio_eos_token_id=tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN),
        audio_pool_stride=audio_pool_stride,
        context_extension=context_extension,
    )
    rows = config.text_config.vocab_size
    too_big = [t for t in (config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id) if t >= rows]
    if too_big:
        raise ValueError(f"audio token ids {too_big} do not fit the {rows}-row embedding of {vlm!r}")

    model, info = AudioVLMForConditionalGeneration.from_pretrained(
        vlm, config=config, output_loading_info=True, dtype=dtype, **hub_kwargs, **(model_kwargs or {})
    )
    missing = [k for k in info.get("missing_keys", []) if not _NEW_AUDIO_MODULES.match(k)]
    unexpected = list(info.get("unexpected_keys", []))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"Qwen2-VL checkpoint {vlm!r} did not load cleanly: missing {sorted(missing)[:10]} ({len(missing)} total), "
            f"unexpected {sorted(unexpected)[:10]} ({len(unexpected)} total)"
        )
    encoder = load_whisper_encoder(whisper, dtype=dtype, **hub_kwargs)
    model.audio_tower.load_state_dict(encoder.state_dict(), strict=True)
    model.audio_tower.requires_grad_(False)
    torch.nn.init.normal_(model.audio_projector.weight, std=config.text_config.initializer_range)
    init_new_token_rows(model, [config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@torch.no_grad()
def init_new_token_rows(model: AudioVLMForConditionalGeneration, token_ids: list[int], n_known: int | None = None) -> None:
    """Give newly added tokens the mean input (and output) embedding of the known vocabulary.

    Spare rows of a pretrained embedding are untrained (garbage or zeros); the mean row is a neutral start
    that keeps logits of the new tokens in the usual range."""
    n_known = min(token_ids) if n_known is None else n_known
    for matrix in {id(m): m for m in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}.values():
        mean = matrix[:n_known].float().mean(dim=0)
        matrix[token_ids] = mean.to(matrix.dtype)

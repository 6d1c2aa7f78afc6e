"""Input checks of the audio path: bad audio input raises a ValueError naming the bad value."""

from __future__ import annotations

import torch

from ..encoders.whisper import WhisperGeometry


def check_audio_features(audio_config, input_features: torch.Tensor, input_features_mask: torch.Tensor | None) -> None:
    """Raise unless ``input_features`` is (num_chunks, num_mel_bins, 2 * max_source_positions) finite log-mel
    windows of ``audio_config`` (a `WhisperConfig`) and ``input_features_mask`` None or (num_chunks, frames)."""
    if input_features.ndim != 3:
        raise ValueError(
            f"input_features must be (num_chunks, num_mel_bins, frames), got shape {tuple(input_features.shape)}"
        )
    if input_features.shape[1] != audio_config.num_mel_bins:
        raise ValueError(
            f"input_features has {input_features.shape[1]} mel bins but the audio encoder expects "
            f"{audio_config.num_mel_bins}"
        )
    expected_frames = WhisperGeometry.of(audio_config).window_mel_frames
    if input_features.shape[2] != expected_frames:
        raise ValueError(
            f"input_features windows have {input_features.shape[2]} frames but the audio encoder expects "
            f"{expected_frames}"
        )
    if input_features_mask is not None and input_features_mask.shape != input_features.shape[::2]:
        raise ValueError(
            f"input_features_mask shape {tuple(input_features_mask.shape)} does not match input_features "
            f"{tuple(input_features.shape)} (expected {tuple(input_features.shape[::2])})"
        )
    if not torch.isfinite(input_features.sum()) and not torch.isfinite(input_features).all():
        bad = int((~torch.isfinite(input_features)).sum())
        raise ValueError(f"input_features contains {bad} non-finite values (NaN or Inf)")


def check_placeholders_have_audio(input_ids: torch.Tensor, audio_token_id: int) -> None:
    """Raise if the prompt tokens ``input_ids`` (B, L) hold ``<|AUDIO|>`` placeholders (no audio was given)."""
    n = int((input_ids == audio_token_id).sum())
    if n:
        raise ValueError(
            f"input_ids contain {n} <|AUDIO|> placeholder tokens but no audio was given (input_features is None)"
        )


def check_placeholder_count(n_placeholders: int, n_frames: int, audio_token_id: int) -> None:
    """Raise unless the prompt's ``<|AUDIO|>`` placeholders (id ``audio_token_id``) number the projected audio
    frames; with none at all, say that the processor may give ``<|AUDIO|>`` another id than the model."""
    if n_placeholders == n_frames:
        return
    hint = (
        f"; the input_ids hold no <|AUDIO|> token with this model's id {audio_token_id}: was the prompt built by "
        "the processor of another model (Qwen2-VL and Qwen2.5-VL give <|AUDIO|> other ids; "
        "audio_checks.check_processor_matches_model compares them)?"
        if n_placeholders == 0
        else "; expand the placeholders with AudioVLMProcessor"
    )
    raise ValueError(
        f"audio placeholder count ({n_placeholders} <|AUDIO|> tokens) does not match the number of audio feature "
        f"frames ({n_frames}){hint}"
    )


def check_processor_matches_model(processor, config) -> None:
    """Raise unless ``processor``'s tokenizer gives the three audio tokens the ids ``config`` (the model's) uses.

    The Qwen2-VL and Qwen2.5-VL tokenizers place them differently (``<|AUDIO|>`` is 151658 in one, 151666 in the
    other): a prompt built by the other family's processor holds no placeholder this model recognises."""
    from ..processing.tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

    names = ("audio_bos_token_id", "audio_token_id", "audio_eos_token_id")
    tokens = (AUDIO_BOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN)
    processor_ids = [processor.tokenizer.convert_tokens_to_ids(token) for token in tokens]
    model_ids = [getattr(config, name) for name in names]
    if processor_ids != model_ids:
        differ = ", ".join(
            f"{token} {theirs} in the processor, {ours} in the model ({name})"
            for token, theirs, ours, name in zip(tokens, processor_ids, model_ids, names)
            if theirs != ours
        )
        raise ValueError(
            f"the processor does not belong to this model: its audio token ids differ ({differ}); its prompts "
            "would hold no audio placeholder the model recognises. Save the processor the model was built with "
            "into the folder (a Qwen2.5-VL model needs a processor from the Qwen2.5-VL tokenizer, Qwen2-VL its own)"
        )

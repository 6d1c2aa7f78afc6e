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

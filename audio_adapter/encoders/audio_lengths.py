"""The one owner of audio-length arithmetic: samples -> mel frames -> encoder frames -> audio tokens.

Every other place (processor, model, config, collator, scripts, tests) calls these functions; none re-derives
a step. The encoder's numbers (rate, hop, conv stride, window) come from `audio_adapter.encoders.whisper.WHISPER`.
The chain, for a 16 kHz clip:

    samples --(split into windows of chunk_seconds)--> real samples per window
    real samples n  --> mel frames      ceil(n / 160)                 (10 ms hop)
    mel frames m    --> encoder frames  (m - 1) // 2 + 1              (Whisper's second conv has stride 2)
    encoder frames e --> audio tokens   ceil(e / frames_per_token)    (pooling x projector frame stacking)

so 50 encoder frames per second, and ``50 / frames_per_token`` audio tokens per second. ``frames_per_token``
is `AudioVLMConfig.audio_frames_per_token`: ``audio_pool_stride`` times the projector's stack factor (1 for
the linear projector). A 4 s clip is 200 tokens at frames_per_token 1; 75 s is 1500 + 1500 + 750 = 3750.
"""

from __future__ import annotations

import torch

from .whisper import WHISPER


def chunk_samples(chunk_seconds: float = WHISPER.window_seconds) -> int:
    """Samples in one encoder window of ``chunk_seconds``."""
    return int(round(chunk_seconds * WHISPER.sampling_rate))


def window_seconds(max_source_positions: int) -> float:
    """Seconds one Whisper window covers: it consumes ``2 * max_source_positions`` mel frames (30 s for 1500)."""
    return WHISPER.with_window(max_source_positions).window_seconds


def window_mel_frames(max_source_positions: int) -> int:
    """Mel frames of one full Whisper window (3000 for 1500 positions)."""
    return WHISPER.with_window(max_source_positions).window_mel_frames


def frames_per_token(pool_stride: int = 1, stack_factor: int = 1) -> int:
    """Encoder frames behind one audio token: average-pooling stride x the projector's frame stacking."""
    return int(pool_stride) * int(stack_factor)


def tokens_per_second(frames_per_token: int = 1) -> float:
    """Audio tokens per second of real audio: 50 encoder frames a second, divided by ``frames_per_token``."""
    return WHISPER.encoder_frames_per_second / frames_per_token


def mel_frames(valid_samples: int | torch.Tensor) -> int | torch.Tensor:
    """Mel frames covering ``valid_samples`` of real audio: ceil(n / hop). Ints or long tensors."""
    return (valid_samples + WHISPER.hop_length - 1) // WHISPER.hop_length


def encoder_frames(num_mel_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Encoder frames after Whisper's stride-2 conv: (m - 1) // 2 + 1. Ints or long tensors."""
    return (num_mel_frames - 1) // WHISPER.conv_stride + 1


def window_token_count(num_mel_frames: int | torch.Tensor, frames_per_token: int = 1) -> int | torch.Tensor:
    """Audio tokens of one window with ``num_mel_frames`` real mel frames: ceil(encoder frames / frames_per_token).
    Ints or long tensors (shape kept); 0 mel frames give 0 tokens."""
    return -(-encoder_frames(num_mel_frames) // frames_per_token)


def chunk_lengths(num_samples: int, chunk_seconds: float = WHISPER.window_seconds) -> list[int]:
    """Real samples in each window of a clip: full windows, then the remainder."""
    if num_samples <= 0:
        raise ValueError(f"audio has {num_samples} samples at 16 kHz: a clip needs at least one sample")
    size = chunk_samples(chunk_seconds)
    full, rest = divmod(int(num_samples), size)
    return [size] * full + ([rest] if rest else [])


def audio_token_count(
    num_samples: int, chunk_seconds: float = WHISPER.window_seconds, frames_per_token: int = 1
) -> int:
    """Placeholder tokens of one 16 kHz clip of ``num_samples`` samples: `window_token_count` per window, summed."""
    if int(frames_per_token) != frames_per_token or frames_per_token < 1:
        raise ValueError(f"frames_per_token must be an integer >= 1, got {frames_per_token!r}")
    return sum(
        window_token_count(mel_frames(n), int(frames_per_token)) for n in chunk_lengths(num_samples, chunk_seconds)
    )


def window_token_lengths(
    input_features_mask: torch.Tensor | None, num_windows: int, max_source_positions: int, frames_per_token: int
) -> torch.Tensor:
    """(num_windows,) long tokens each encoder window contributes, from its mask of real mel frames.

    Args:
        input_features_mask: (num_windows, mel frames) 1 on mel frames of real audio, or None: every frame real.
    """
    if input_features_mask is None:
        mel = torch.full((num_windows,), window_mel_frames(max_source_positions), dtype=torch.long)
    else:
        mel = input_features_mask.long().sum(-1).cpu()
    return window_token_count(mel, frames_per_token)

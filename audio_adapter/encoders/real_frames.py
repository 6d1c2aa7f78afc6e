"""Encode only the mel frames that cover real audio (opt-in: `AudioVLMConfig.audio_encode_real_frames_only`).

Whisper pads every window to 30 s, so a 5 s clip pays for 30 s of encoder work. Here each window is cut to
the frames its real audio needs, rounded up so that Whisper's stride-2 conv yields whole encoder frames and
pooling and the projector's frame stacking see whole groups: 2 * frames_per_token * (tokens of the window) mel
frames (frames_per_token = pool stride x stack factor), at most the full window. The encoder then runs on that
prefix alone (as Ultravox does). Its outputs are NOT those of the padded window -- Whisper's self-attention no
longer sees the padding it was trained with -- so this is a speed/fidelity trade-off, off by default.

transformers 5.23's `WhisperEncoder.forward` refuses any input but 2 * max_source_positions frames, so the
trimmed windows go through its own submodules (conv stem, the first T rows of its sinusoidal position table,
its layers, its final norm) in the order its forward applies them; a test checks that a full-length window
gives exactly what `WhisperEncoder.forward` gives.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .audio_lengths import encoder_frames, window_token_count
from .whisper import WHISPER


def real_mel_frames(mel_valid: torch.Tensor, frames_per_token: int, window_frames: int) -> torch.Tensor:
    """(N,) real mel frames per window -> (N,) mel frames to encode: 2 * frames_per_token * tokens, capped at
    the window. The encoder then gives frames_per_token * tokens frames (>= the real ones), and pooling /
    stacking exactly the window's tokens."""
    tokens = window_token_count(mel_valid.long(), frames_per_token)
    stride = WHISPER.conv_stride  # mel frames per encoder frame
    return (stride * frames_per_token * tokens).clamp(min=stride, max=window_frames)


def whisper_encoder_forward(tower: WhisperEncoder, input_features: torch.Tensor) -> torch.Tensor:
    """`WhisperEncoder.forward` for any even number of mel frames T <= 2 * max_source_positions.

    Args:
        input_features: (B, num_mel_bins, T) log-mel frames.
    Returns:
        (B, T // 2, d_model) last hidden state.
    """
    frames = input_features.shape[-1]
    window = WHISPER.with_window(tower.max_source_positions).window_mel_frames
    if frames > window:
        raise ValueError(f"{frames} mel frames exceed the encoder's {window}")
    hidden = nn.functional.gelu(tower.conv1(input_features))
    hidden = nn.functional.gelu(tower.conv2(hidden)).permute(0, 2, 1)
    hidden = hidden + tower.embed_positions.weight[: hidden.shape[1]]
    hidden = nn.functional.dropout(hidden, p=tower.dropout, training=tower.training)
    for layer in tower.layers:
        if tower.training and tower.layerdrop > 0.0 and torch.rand([]) < tower.layerdrop:
            continue  # LayerDrop, as the stock forward does in training
        hidden = layer(hidden, None)
    return tower.layer_norm(hidden)


def encode_real_frames(tower: WhisperEncoder, input_features: torch.Tensor, mel_frames: torch.Tensor) -> torch.Tensor:
    """Encode each window over its first `mel_frames[i]` mel frames only.

    Windows of equal length run as one batch; a window's result never depends on the other windows.
    Args:
        input_features: (N, num_mel_bins, F) log-mel windows.
        mel_frames: (N,) long, even, <= F (see `real_mel_frames`).
    Returns:
        (N, T, d_model) with T = encoder frames of the longest window; rows past a window's own encoder
        frames are zero (they lie past its tokens, and pooling groups never straddle them).
    """
    mel_frames = mel_frames.to(torch.long).cpu()
    encoded = encoder_frames(mel_frames)
    out = input_features.new_zeros(input_features.shape[0], int(encoded.max()), tower.config.d_model)
    for length in sorted(set(mel_frames.tolist())):
        rows = (mel_frames == length).nonzero().squeeze(1).to(input_features.device)
        frames = whisper_encoder_forward(tower, input_features[rows, :, :length])
        out = out.index_copy(0, rows, nn.functional.pad(frames, (0, 0, 0, out.shape[1] - frames.shape[1])))
    return out

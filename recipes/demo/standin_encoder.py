"""A stand-in for a pretrained Whisper encoder, for the offline CPU demo only.

The real recipe assumes `openai/whisper-large-v3-turbo`, whose frames already carry what was said. A tiny
random encoder carries too little usable signal for a tiny LM to learn from within minutes
(docs/demo-feasibility.md), and no weights can be downloaded here. So the demo first fits the tiny
`WhisperEncoder` with a CTC head on the synthetic notes (the frames learn to name the note under them),
throws the head away and freezes the encoder; the two-stage recipe then runs unchanged on top.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from audio_adapter.encoders.audio_lengths import window_token_count
from audio_adapter.model.audio_mixin import pool_audio_frames

from ..common.progress import Heartbeat

CTC_BLANK = 0


def pooled_frame_lengths(input_features_mask: torch.Tensor, pool_stride: int) -> torch.Tensor:
    """(N, mel_frames) mask -> (N,) pooled encoder frames of real audio (the audio tokens the model splices)."""
    return window_token_count(input_features_mask.long().sum(-1), pool_stride)


def encode_pooled(encoder: nn.Module, input_features: torch.Tensor, pool_stride: int) -> torch.Tensor:
    """(N, n_mels, mel_frames) -> (N, frames / pool_stride, d_model), pooled as the model pools."""
    return pool_audio_frames(encoder(input_features).last_hidden_state, pool_stride)


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """(N, T, C) -> label sequences: best class per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1)
    out = []
    for row, n in zip(best, lengths.tolist()):
        seq, prev = [], CTC_BLANK
        for label in row[:n].tolist():
            if label != prev and label != CTC_BLANK:
                seq.append(label)
            prev = label
        out.append(seq)
    return out


class _CtcTargets:
    """Per-clip label sequences packed for ``F.ctc_loss``, with the clips' pooled frame counts."""

    def __init__(self, targets: Sequence[Sequence[int]], frame_lengths: torch.Tensor):
        self.frame_lengths = frame_lengths
        self.lengths = torch.tensor([len(t) for t in targets])
        self.flat = torch.tensor([label for t in targets for label in t])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    def loss(self, log_probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """CTC loss of (B, frames, classes) ``log_probs`` for the clips ``idx`` (B,)."""
        batch_targets = torch.cat([self.flat[self.offsets[i] : self.offsets[i + 1]] for i in idx.tolist()])
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            batch_targets,
            self.frame_lengths[idx],
            self.lengths[idx],
            blank=CTC_BLANK,
            zero_infinity=True,
        )


def pretrain_standin_encoder(
    encoder: nn.Module,
    input_features: torch.Tensor,
    input_features_mask: torch.Tensor,
    targets: Sequence[Sequence[int]],
    num_classes: int,
    pool_stride: int = 1,
    max_seconds: float = 90.0,
    max_steps: int = 10_000,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    progress=None,
) -> dict:
    """Fit `encoder` (in place) with a CTC head so its pooled frames name the notes under them.

    Args:
        input_features: (N, n_mels, mel_frames) log-mel windows, one per clip.
        input_features_mask: (N, mel_frames) 1 on frames of real audio.
        targets: per clip, label ids in 1..num_classes (0 is the CTC blank).
        max_seconds / max_steps: whichever comes first ends training.
        progress: optional callable(step, loss) for a progress display.
    Returns:
        {"losses": [...], "steps": int, "seconds": float}.
    """
    if len(targets) != input_features.shape[0]:
        raise ValueError(f"{len(targets)} target sequences for {input_features.shape[0]} clips")
    generator = torch.Generator().manual_seed(seed)
    d_model = encoder.config.d_model
    head = nn.Linear(d_model, num_classes + 1)
    params = [p for p in encoder.parameters()] + list(head.parameters())
    for p in encoder.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ctc = _CtcTargets(targets, pooled_frame_lengths(input_features_mask, pool_stride))
    encoder.train()
    losses: list[float] = []
    start, step = time.perf_counter(), 0
    beat = Heartbeat("stand-in encoder (CTC)", max_steps)
    beat.start()
    while step < max_steps and time.perf_counter() - start < max_seconds:
        idx = torch.randint(0, input_features.shape[0], (batch_size,), generator=generator)
        log_probs = head(encode_pooled(encoder, input_features[idx], pool_stride)).log_softmax(-1)
        loss = ctc.loss(log_probs, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        beat.update(step, loss=losses[-1])
        if progress is not None:
            progress(step, losses[-1])
    beat.stop()
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return {"losses": losses, "steps": step, "seconds": time.perf_counter() - start, "head": head}


@torch.no_grad()
def ctc_exact_match(
    encoder: nn.Module,
    head: nn.Module,
    input_features: torch.Tensor,
    input_features_mask: torch.Tensor,
    targets: Sequence[Sequence[int]],
    pool_stride: int = 1,
) -> float:
    """Fraction of clips whose greedy CTC decode equals the target sequence (a check on the stand-in)."""
    log_probs = head(encode_pooled(encoder, input_features, pool_stride)).log_softmax(-1)
    decoded = ctc_greedy_decode(log_probs, pooled_frame_lengths(input_features_mask, pool_stride))
    return sum(d == list(t) for d, t in zip(decoded, targets)) / max(1, len(targets))

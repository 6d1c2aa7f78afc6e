"""Waveform -> Whisper log-mel, in pure torch (no torchaudio, no numpy STFT).

Follows `transformers.WhisperFeatureExtractor` step for step so a real Whisper encoder sees the features
it was trained on: 16 kHz mono, 30 s windows zero-padded, periodic Hann STFT (n_fft 400, hop 160,
centred with reflect padding), power spectrum without its last frame, Slaney mel filters
(`transformers.audio_utils.mel_filter_bank`), log10 clamped at 1e-10, floored at the window's max - 8,
then (x + 4) / 4.

Only real audio becomes tokens; how many is `audio_lengths`' business (the one place that counts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import get_worker_info

from ..encoders.audio_lengths import chunk_lengths, chunk_samples, mel_frames
from ..encoders.whisper import SAMPLING_RATE, WHISPER

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.uint8): 128.0}


# ======================================================================================= waveform
def _as_float_tensor(audio) -> torch.Tensor:
    if isinstance(audio, torch.Tensor):
        return audio.detach().to(torch.float32).cpu()
    array = np.asarray(audio)
    if array.dtype in _INT_SCALE:
        offset = 128.0 if array.dtype == np.uint8 else 0.0
        array = (array.astype(np.float32) - offset) / _INT_SCALE[array.dtype]
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"audio must hold float or PCM integer samples, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """(T,), (C, T) or (T, C) -> (T,) float32 channel mean. The channel axis is the shorter one."""
    waveform = _as_float_tensor(waveform)
    if waveform.ndim > 2:
        raise ValueError(f"audio must be 1-D (samples) or 2-D (channels x samples), got shape {tuple(waveform.shape)}")
    if waveform.numel() == 0:
        raise ValueError(f"audio is empty (shape {tuple(waveform.shape)}): a clip needs at least one sample")
    # A finite sum proves every sample finite (NaN and inf propagate); only a non-finite one needs the scan.
    if not torch.isfinite(waveform.sum()) and not torch.isfinite(waveform).all():
        bad = int((~torch.isfinite(waveform)).sum())
        raise ValueError(f"audio holds {bad} NaN/inf samples out of {waveform.numel()}")
    if waveform.ndim == 1:
        return waveform
    channel_axis = 0 if waveform.shape[0] <= waveform.shape[1] else 1
    return waveform.mean(dim=channel_axis)


_PHASES_PER_GROUP = 16  # measured on 44.1 -> 16 kHz: 16 phases a matmul is ~2.7x faster than one dense conv1d


@lru_cache(maxsize=32)
def _resample_kernels(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> tuple[list[tuple[int, torch.Tensor]], int]:
    """Polyphase windowed-sinc kernels for a reduced ratio orig:new, as groups of consecutive phases:
    ([(first tap, (taps, phases) weights)], width).

    Output frame f, phase j sits at input time f * orig + j * orig / new; its kernel samples a Kaiser-windowed
    sinc low-pass with cut-off rolloff * min(orig, new) / 2 (in units of the input rate). Tap i reads input
    sample f * orig - width + i. A kernel is non-zero on only ~2 * width taps, and neighbouring phases sit
    next to each other, so each group keeps just the taps where one of its phases is non-zero: the zeros are
    never stored nor multiplied (a dense (new, 2 * width + orig) table would be gigabytes for 16001 Hz).
    """
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    half_support = lowpass_filter_width * orig / base_freq  # in input samples
    i0_beta = torch.special.i0(torch.tensor(beta, dtype=torch.float64))
    groups = []
    for first in range(0, new, _PHASES_PER_GROUP):
        phase = torch.arange(first, min(new, first + _PHASES_PER_GROUP), dtype=torch.float64)
        centre_first, centre_last = first * orig / new, float(phase[-1]) * orig / new
        lo = max(0, math.floor(width + centre_first - half_support))
        hi = min(2 * width + orig, math.ceil(width + centre_last + half_support) + 1)
        taps = (torch.arange(lo, hi, dtype=torch.float64)[:, None] - width) / orig  # (taps, 1), input time
        t = (taps - phase[None, :] / new) * base_freq  # (taps, phases)
        outside = t.abs() >= lowpass_filter_width  # the window is zero there (exact zeros, not sin(k pi) residue)
        t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
        window = torch.special.i0(beta * torch.sqrt(1 - (t / lowpass_filter_width) ** 2)) / i0_beta
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
        weights = (sinc * window * (base_freq / orig)).masked_fill(outside, 0.0)
        groups.append((lo, weights.to(torch.float32).contiguous()))
    return groups, width


def resample(
    waveform: torch.Tensor,
    orig_sr: int,
    target_sr: int = SAMPLING_RATE,
    lowpass_filter_width: int = 16,
    rolloff: float = 0.945,
    beta: float = 14.769656459379492,
) -> torch.Tensor:
    """Band-limited resampling (..., T) -> (..., ceil(T * target_sr / orig_sr)).

    Windowed-sinc (Kaiser) polyphase filter: the rate ratio is reduced by its gcd and every output phase
    gets its own kernel, so any rational ratio (8/22.05/44.1/48 kHz -> 16 kHz) works. Output frame f, phase j
    is input[f * orig - width :][:K] . kernel_j, computed as matmuls: over a strided view of each phase
    group's taps where frames do not overlap (44.1 kHz), over blocks of frames where they do (48 kHz).
    """
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if not float(rate).is_integer() or rate <= 0:
            raise ValueError(f"{name} must be a positive integer rate in Hz, got {rate}")
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return waveform
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    groups, width = _resample_kernels(orig, new, lowpass_filter_width, rolloff, beta)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1]).to(torch.float32)
    frames = shape[-1] // orig + 1  # frame f covers input samples [f * orig - width, f * orig - width + K)
    if all(orig >= weights.shape[0] for _, weights in groups):
        out = _resample_by_phase_groups(flat, frames, orig, groups, width)
    else:
        out = _resample_by_blocks(flat, frames, orig, new, lowpass_filter_width, rolloff, beta)
    target_length = math.ceil(new * shape[-1] / orig)
    return out[:, :target_length].reshape(*shape[:-1], target_length)


def _resample_by_phase_groups(
    flat: torch.Tensor, frames: int, orig: int, groups: list[tuple[int, torch.Tensor]], width: int
) -> torch.Tensor:
    """(rows, T) -> (rows, frames * new) when frames do not overlap (orig >= every group's taps, e.g. 44.1 kHz):
    a strided view of each frame's taps is then a valid BLAS matrix (row stride orig), one matmul a group."""
    padded = F.pad(flat, (width, width + orig)).contiguous()
    rows, length = padded.shape
    per_group = []
    for first_tap, weights in groups:
        taps = padded.as_strided((rows, frames, weights.shape[0]), (length, orig, 1), first_tap)
        per_group.append(torch.matmul(taps, weights.to(padded.device)))  # (rows, frames, phases)
    return torch.cat(per_group, dim=-1).reshape(rows, -1)


@lru_cache(maxsize=32)
def _block_resample_weights(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """For ratios whose frames overlap (48/32/24/8 kHz): M frames a block, (first, second) (M * orig, M * new)
    weights, M and width, such that block b's outputs are input_block[b] @ first + input_block[b + 1] @ second
    (input padded by width zeros in front)."""
    groups, width = _resample_kernels(orig, new, lowpass_filter_width, rolloff, beta)
    taps = 2 * width + orig
    kernels = torch.zeros(taps, new)  # (K, new): the dense kernels, tap by phase
    phase = 0
    for first_tap, weights in groups:
        kernels[first_tap : first_tap + weights.shape[0], phase : phase + weights.shape[1]] = weights
        phase += weights.shape[1]
    frames_per_block = -(-(taps - orig) // orig)  # a block's frames then reach at most into the next block
    size = frames_per_block * orig
    both = torch.zeros(2 * size, frames_per_block * new)
    for m in range(frames_per_block):
        both[m * orig : m * orig + taps, m * new : (m + 1) * new] = kernels
    return both[:size].contiguous(), both[size:].contiguous(), frames_per_block, width


def _resample_by_blocks(
    flat: torch.Tensor, frames: int, orig: int, new: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> torch.Tensor:
    """(rows, T) -> (rows, >= frames * new) when frames overlap (small orig, e.g. 48 kHz: 3 input samples a
    frame, 105 taps). The input, cut into non-overlapping blocks of M frames, is a plain reshape; each block's
    outputs need only it and the next one: two matmuls with banded weights (measured 3.8x faster than a
    strided conv1d at 48 kHz; ~2x the minimal multiplications, at BLAS speed)."""
    first, second, frames_per_block, width = _block_resample_weights(orig, new, lowpass_filter_width, rolloff, beta)
    first, second = first.to(flat.device), second.to(flat.device)
    size = first.shape[0]
    blocks = -(-frames // frames_per_block)
    rows, length = flat.shape
    padded = flat.new_zeros(rows, (blocks + 1) * size)
    padded[:, width : width + length] = flat
    chunks = padded.view(rows, blocks + 1, size)
    out = torch.matmul(chunks[:, :-1], first)
    out += torch.matmul(chunks[:, 1:], second)
    return out.reshape(rows, -1)


def prepare_waveform(audio, sampling_rate: int) -> torch.Tensor:
    """Any clip (numpy/torch/list, float or PCM int, mono or stereo, any rate) -> (T,) float32 at 16 kHz."""
    mono = to_mono(audio)
    return resample(mono, sampling_rate, SAMPLING_RATE).contiguous()


def chunk_waveform(
    waveform: torch.Tensor, chunk_seconds: float = WHISPER.window_seconds
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) 16 kHz -> ((num_chunks, chunk_samples) zero-padded windows, (num_chunks,) real samples each)."""
    if waveform.ndim != 1:
        raise ValueError(f"chunk_waveform takes a mono (T,) waveform, got shape {tuple(waveform.shape)}")
    lengths = chunk_lengths(waveform.shape[0], chunk_seconds)
    size = chunk_samples(chunk_seconds)
    padded = F.pad(waveform, (0, len(lengths) * size - waveform.shape[0]))
    return padded.reshape(len(lengths), size), torch.tensor(lengths, dtype=torch.long)


# ======================================================================================= log-mel
@lru_cache(maxsize=8)
def _mel_filters(n_mels: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=1 + WHISPER.n_fft // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLING_RATE / 2,
        sampling_rate=SAMPLING_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(filters, dtype=np.float32)).T.contiguous()  # (n_mels, n_freq)


class LogMelSpectrogram:
    """Whisper log-mel of fixed-length windows: (B, chunk_samples) -> (B, n_mels, chunk_samples // 160).

    Shorter inputs are zero-padded to the window (as Whisper pads to 30 s) before the STFT, so the
    per-window max - 8 floor sees the same padded window as `WhisperFeatureExtractor`.
    """

    def __init__(self, n_mels: int = WHISPER.num_mel_bins, chunk_seconds: float = WHISPER.window_seconds):
        if n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {n_mels}")
        self.n_mels = int(n_mels)
        self.chunk_seconds = float(chunk_seconds)
        self.chunk_samples = chunk_samples(chunk_seconds)
        if self.chunk_samples % WHISPER.hop_length:
            raise ValueError(f"chunk_seconds={chunk_seconds} is not a whole number of {WHISPER.hop_length}-sample hops")
        self.num_frames = self.chunk_samples // WHISPER.hop_length
        self.filters = _mel_filters(self.n_mels)
        self.window = torch.hann_window(WHISPER.n_fft, periodic=True)

    def __call__(
        self, windows: torch.Tensor, lengths: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, <= chunk_samples) -> (B, n_mels, num_frames), written into `out` when given.

        Windows shorter than the chunk are zero-padded (as Whisper pads to 30 s). `lengths` (B,): real samples
        per window; when omitted, trailing zeros are found by scanning. Either way only the frames that reach
        real audio go through the STFT: the rest of the window is exact zeros, whose log-mel is the 1e-10 clamp.
        """
        if windows.ndim == 1:
            windows = windows[None]
        if windows.ndim != 2 or windows.shape[-1] > self.chunk_samples:
            raise ValueError(
                f"expected (batch, <= {self.chunk_samples}) windows of 16 kHz audio, got shape {tuple(windows.shape)}"
            )
        windows = windows.to(torch.float32)
        if lengths is None:
            nonzero = windows.ne(0).any(0).nonzero()
            longest = int(nonzero[-1]) + 1 if nonzero.numel() else 0
        else:
            longest = int(lengths.max())
        return self.from_pieces(list(windows), longest, out)

    def from_pieces(
        self, pieces: Sequence[torch.Tensor], longest: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Windows given as 1-D float32 pieces (real audio, implicitly zero-padded to the chunk; nothing past
        `longest` samples is non-zero) -> (len(pieces), n_mels, num_frames), written into `out` when given."""
        # Frame t sees samples [160 t - 200, 160 t + 200): frames from ceil((longest + 200) / 160) on see only
        # zeros. A prefix of longest + 400 samples reproduces the computed frames exactly, the reflect padding
        # at its end reflecting zeros as the full window's would (reflect itself needs > 200 samples).
        frames = min(self.num_frames, -(-(longest + WHISPER.n_fft // 2) // WHISPER.hop_length))
        prefix = max(min(self.chunk_samples, longest + WHISPER.n_fft), WHISPER.n_fft // 2 + 1)
        device = pieces[0].device if len(pieces) else torch.device("cpu")
        padded = _reflect_padded(pieces, prefix, device)
        # Framing by a strided view, then a real FFT: what torch.stft(center=True, reflect) does, without
        # its padding copy and with a contiguous (B, frames, n_freq) spectrum for the power and mel steps.
        framed = padded.unfold(-1, WHISPER.n_fft, WHISPER.hop_length)[:, :frames] * self.window.to(device)
        spectrum = torch.view_as_real(torch.fft.rfft(framed))  # (B, frames, n_freq, 2)
        power = spectrum[..., 0].square() + spectrum[..., 1].square()  # cheaper than abs().square()
        # (n_mels, n_freq) @ (B, n_freq, frames): BLAS reads the transposed power in place.
        computed = torch.matmul(self.filters.to(device), power.mT).clamp_(min=1e-10).log10_()
        # Frames past `frames` hold log10(1e-10) = -10, so the window max and floor follow from the computed part.
        window_max = computed.amax(dim=(1, 2), keepdim=True)
        if frames < self.num_frames:
            window_max = window_max.clamp(min=-10.0)
        floor = window_max - 8.0
        if out is None:
            out = torch.empty(len(pieces), self.n_mels, self.num_frames, device=device)
        head = out[..., :frames]
        torch.maximum(computed, floor, out=head)
        head.add_(4.0).div_(4.0)
        out[..., frames:] = (floor.clamp(min=-10.0) + 4.0) / 4.0
        return out


def _reflect_padded(pieces: Sequence[torch.Tensor], prefix: int, device: torch.device) -> torch.Tensor:
    """1-D pieces -> (B, prefix + n_fft): each piece zero-padded or cut to `prefix` samples, with n_fft // 2
    reflected samples on both sides (torch.stft's ``center=True, pad_mode="reflect"``)."""
    half = WHISPER.n_fft // 2
    padded = torch.zeros(len(pieces), prefix + WHISPER.n_fft, device=device)
    for row, piece in enumerate(pieces):
        n = min(piece.shape[-1], prefix)
        padded[row, half : half + n] = piece[:n]
    padded[:, :half] = padded[:, half + 1 : 2 * half + 1].flip(-1)
    padded[:, half + prefix :] = padded[:, prefix - 1 : prefix + half - 1].flip(-1)
    return padded


def extract_features(
    waveforms: Sequence[torch.Tensor], mel: LogMelSpectrogram, batch_size: int = 4
) -> dict[str, torch.Tensor]:
    """16 kHz mono clips -> encoder inputs, windows in clip order.

    `batch_size` windows go through the STFT together; small batches are faster on CPU (measured: 4 windows
    ~2.6 ms per 10 s clip, 64 windows ~3.9 ms), since their temporaries are reused instead of freshly paged in.

    Returns:
        input_features: (num_chunks, n_mels, frames) float32.
        input_features_mask: (num_chunks, frames) long, 1 on mel frames of real audio.
        audio_chunk_counts: (num_clips,) long, windows per clip.
    """
    if len(waveforms) == 0:
        raise ValueError("extract_features needs at least one clip")
    size = mel.chunk_samples
    segments: list[tuple[torch.Tensor, int]] = []  # (clip, first sample) of every window
    lengths: list[int] = []
    counts: list[int] = []
    for waveform in waveforms:
        if waveform.ndim != 1:
            raise ValueError(f"extract_features takes mono (T,) waveforms, got shape {tuple(waveform.shape)}")
        clip_lengths = chunk_lengths(waveform.shape[0], mel.chunk_seconds)
        segments += [(waveform, k * size) for k in range(len(clip_lengths))]
        lengths += clip_lengths
        counts.append(len(clip_lengths))
    features = _empty_features((len(segments), mel.n_mels, mel.num_frames))
    # Windows are filled only up to the batch's longest real audio: the padded zeros are never materialised.
    for first in range(0, len(segments), batch_size):
        batch_lengths = lengths[first : first + batch_size]
        pieces = [
            clip[start : start + n] for (clip, start), n in zip(segments[first : first + batch_size], batch_lengths)
        ]
        mel.from_pieces(pieces, max(batch_lengths), out=features[first : first + batch_size])
    frames = mel_frames(torch.tensor(lengths))
    mask = (torch.arange(mel.num_frames)[None, :] < frames[:, None]).long()
    return {
        "input_features": features,
        "input_features_mask": mask,
        "audio_chunk_counts": torch.tensor(counts, dtype=torch.long),
    }


def _empty_features(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in shared memory inside a DataLoader worker, so that sending the batch
    to the main process passes a handle instead of copying ~1.5 MB per 30 s window into a new shared segment
    (what `torch.utils.data.default_collate` does for the same reason; measured ~0.7 ms a 10 s clip)."""
    if get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0).set_(storage, 0, shape)

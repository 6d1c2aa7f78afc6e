"""Synthetic audio data for the offline demo and tests: which notes are played?

The demo task (``docs/demo-feasibility.md``): 3-6 pure tones, 0.25-0.35 s each, pitches from
C4 D4 E4 F4 G4 A4 B4 C5, random amplitude and phase, small gaps, light noise -> the response lists their
names in order ("C4 E4 G4 A4"). Everything is deterministic for a seed: sample ``i`` depends only on
``(seed, i)``, so a larger dataset starts with the same samples as a smaller one.

`make_notes_dataset` writes FLAC files + a JSONL manifest (+ shards via `recipes.data.shard_writer.write_shards`);
`make_mcqa_dataset` writes a four-choice question set whose answer the audio determines (for eval scripts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio_adapter.encoders.whisper import SAMPLING_RATE

NOTE_NAMES = ("C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5")
_SEMITONES_FROM_A4 = {"C4": -9, "D4": -7, "E4": -5, "F4": -4, "G4": -2, "A4": 0, "B4": 2, "C5": 3}
NOTE_FREQS = {name: 440.0 * 2.0 ** (_SEMITONES_FROM_A4[name] / 12.0) for name in NOTE_NAMES}
DEFAULT_PROMPT = "Which notes are played?"


@dataclass
class NotesConfig:
    """Knobs of the note clips. ``long_seconds``: make every clip at least this long (e.g. 40 for
    > 30 s long-audio tests) by spreading the notes with long noise-only gaps."""

    sampling_rate: int = SAMPLING_RATE
    min_notes: int = 3
    max_notes: int = 6
    note_seconds: tuple[float, float] = (0.25, 0.35)
    gap_seconds: tuple[float, float] = (0.03, 0.10)
    lead_seconds: tuple[float, float] = (0.02, 0.10)
    amplitude: tuple[float, float] = (0.2, 0.6)
    noise: float = 0.005
    fade_seconds: float = 0.01
    long_seconds: float | None = None
    notes: tuple[str, ...] = NOTE_NAMES


def _rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def tone(
    freq: float, seconds: float, sr: int, amplitude: float = 0.5, phase: float = 0.0, fade: float = 0.01
) -> np.ndarray:
    """A pure sine with raised-cosine fades (no clicks), float32."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    y = amplitude * np.sin(2 * np.pi * freq * t + phase)
    nf = min(int(round(fade * sr)), n // 2)
    if nf > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, nf))
        y[:nf] *= ramp
        y[n - nf :] *= ramp[::-1]
    return y.astype(np.float32)


def synth_notes(
    rng: np.random.Generator, cfg: NotesConfig = NotesConfig(), n_notes: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """One clip: (float32 audio (T,) at ``cfg.sampling_rate``, note names in playing order)."""
    sr = cfg.sampling_rate
    if n_notes is None:
        n_notes = int(rng.integers(cfg.min_notes, cfg.max_notes + 1))
    names = [cfg.notes[i] for i in rng.integers(0, len(cfg.notes), size=n_notes)]
    durations = rng.uniform(*cfg.note_seconds, size=n_notes)
    gaps = rng.uniform(*cfg.gap_seconds, size=n_notes + 1)
    gaps[0] = rng.uniform(*cfg.lead_seconds)
    gaps[-1] = rng.uniform(*cfg.lead_seconds)
    if cfg.long_seconds is not None:
        # stretch the silences so the clip reaches long_seconds (a little random slack on top)
        target = cfg.long_seconds * rng.uniform(1.0, 1.1)
        need = target - durations.sum() - gaps.sum()
        if need > 0:
            weights = rng.uniform(0.5, 1.5, size=n_notes + 1)
            gaps = gaps + need * weights / weights.sum()
    pieces = []
    for i, name in enumerate(names):
        pieces.append(np.zeros(int(round(gaps[i] * sr)), np.float32))
        pieces.append(
            tone(
                NOTE_FREQS[name],
                float(durations[i]),
                sr,
                amplitude=float(rng.uniform(*cfg.amplitude)),
                phase=float(rng.uniform(0, 2 * np.pi)),
                fade=cfg.fade_seconds,
            )
        )
    pieces.append(np.zeros(int(round(gaps[-1] * sr)), np.float32))
    audio = np.concatenate(pieces)
    if cfg.noise > 0:
        audio = audio + cfg.noise * rng.standard_normal(audio.shape[0]).astype(np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), names


def notes_sample(seed: int, index: int, cfg: NotesConfig = NotesConfig(), prompt: str = DEFAULT_PROMPT) -> dict:
    """Sample ``index`` of the notes task: ``{"key", "audio", "sampling_rate", "notes", "prompt", "response"}``."""
    audio, names = synth_notes(_rng(seed, index), cfg)
    return {
        "key": f"notes_{seed}_{index:07d}",
        "audio": audio,
        "sampling_rate": cfg.sampling_rate,
        "notes": names,
        "prompt": prompt,
        "response": " ".join(names),
    }


@dataclass
class SyntheticDataset:
    """Paths written by `make_notes_dataset` / `make_mcqa_dataset`."""

    root: Path
    manifest: Path
    audio_dir: Path
    keys: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    shard_pattern: str | None = None


def _write_flac(path: Path, audio: np.ndarray, sr: int) -> None:
    import soundfile as sf

    sf.write(str(path), audio, sr, format="FLAC", subtype="PCM_16")


def write_clip_dataset(
    out_dir: str | os.PathLike, split: str, samples: Iterable[dict], entry_fields: Callable[[dict], dict]
) -> SyntheticDataset:
    """The layout every synthetic task writes: each sample's ``audio`` as ``out_dir/<split>/audio/<key>.flac`` and
    one line per sample in ``out_dir/<split>.jsonl``: ``{"key", "audio"}`` (audio path relative to ``out_dir``)
    plus ``entry_fields(sample)``."""
    root = Path(out_dir)
    audio_dir = root / split / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest = root / f"{split}.jsonl"
    keys = []
    with open(manifest, "w", encoding="utf-8") as f:
        for s in samples:
            path = audio_dir / f"{s['key']}.flac"
            _write_flac(path, s["audio"], s["sampling_rate"])
            f.write(json.dumps({"key": s["key"], "audio": str(path.relative_to(root)), **entry_fields(s)}) + "\n")
            keys.append(s["key"])
    return SyntheticDataset(root=root, manifest=manifest, audio_dir=audio_dir, keys=keys)


def shard_dataset(ds: SyntheticDataset, split: str, maxcount: int = 1000, progress: bool = False) -> SyntheticDataset:
    """Write ``ds``'s manifest as ``<root>/shards/<split>-%06d.tar``; a synthetic sample skipped is a bug: raise."""
    from ..data.shard_writer import write_shards

    pattern = str(ds.root / "shards" / f"{split}-%06d.tar")
    summary = write_shards(ds.manifest, pattern, maxcount=maxcount, progress=progress)
    if summary.total_skipped:
        raise RuntimeError(f"synthetic samples were skipped while sharding: {summary.problems[:3]}")
    ds.shards, ds.shard_pattern = summary.shards, pattern
    return ds


def make_notes_dataset(
    out_dir: str | os.PathLike,
    num_samples: int,
    seed: int = 0,
    cfg: NotesConfig | None = None,
    prompt: str = DEFAULT_PROMPT,
    split: str = "train",
    write_shards: bool = True,
    maxcount: int = 1000,
    progress: bool = False,
) -> SyntheticDataset:
    """Write ``num_samples`` note clips: ``out_dir/<split>/audio/<key>.flac``, ``out_dir/<split>.jsonl``
    (``{"key", "audio", "prompt", "response", "notes", "transcript"}``; audio paths relative to ``out_dir``) and, with
    ``write_shards``, ``out_dir/shards/<split>-%06d.tar``."""
    cfg = cfg or NotesConfig()
    samples = (notes_sample(seed, i, cfg, prompt) for i in range(num_samples))
    ds = write_clip_dataset(out_dir, split, samples, notes_entry_fields)
    return shard_dataset(ds, split, maxcount, progress) if write_shards else ds


def notes_entry_fields(sample: dict) -> dict:
    """Manifest fields of a notes sample; its ``transcript`` (what the audio "says") is the note names."""
    return {
        "prompt": sample["prompt"],
        "response": sample["response"],
        "notes": sample["notes"],
        "transcript": " ".join(sample["notes"]),
    }


# ------------------------------------------------------------------------------------------ MCQA
MCQA_KINDS = ("count", "first", "last", "highest", "lowest")


def mcqa_sample(seed: int, index: int, cfg: NotesConfig | None = None) -> dict:
    """A four-choice question whose answer the audio determines.

    Kinds: how many notes (choices "3".."6"), which note is first / last / highest / lowest (four note
    names, the right one among three distinct distractors). Returns ``{"key", "audio", "sampling_rate",
    "question", "choices", "answer" (index), "kind", "notes"}``.
    """
    cfg = cfg or NotesConfig()
    rng = _rng(seed, index, stream=1)
    kind = MCQA_KINDS[int(rng.integers(0, len(MCQA_KINDS)))]
    if kind == "count":
        n = int(rng.integers(3, 7))
        audio, names = synth_notes(rng, cfg, n_notes=n)
        choices = ["3", "4", "5", "6"]
        answer = choices.index(str(n))
        question = "How many notes are played?"
    else:
        audio, names = synth_notes(rng, cfg)
        order = [NOTE_NAMES.index(n) for n in names]
        if kind == "first":
            right, question = names[0], "Which note is played first?"
        elif kind == "last":
            right, question = names[-1], "Which note is played last?"
        elif kind == "highest":
            right, question = NOTE_NAMES[max(order)], "What is the highest note played?"
        else:
            right, question = NOTE_NAMES[min(order)], "What is the lowest note played?"
        pool = [n for n in cfg.notes if n != right]
        distractors = [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
        answer = int(rng.integers(0, 4))
        choices = distractors[:answer] + [right] + distractors[answer:]
    return {
        "key": f"mcqa_{seed}_{index:07d}",
        "audio": audio,
        "sampling_rate": cfg.sampling_rate,
        "question": question,
        "choices": choices,
        "answer": answer,
        "kind": kind,
        "notes": names,
    }


def mcqa_prompt(question: str, choices: list[str]) -> str:
    """The question with lettered choices, as a prompt (answer with the letter)."""
    letters = "ABCD"
    lines = [question] + [f"{letters[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer with the letter."


def make_mcqa_dataset(
    out_dir: str | os.PathLike, num_samples: int, seed: int = 0, cfg: NotesConfig | None = None, split: str = "mcqa"
) -> SyntheticDataset:
    """Write FLAC clips and ``out_dir/<split>.jsonl`` with ``{"key", "audio", "question", "choices", "answer",
    "kind", "prompt", "response", "transcript"}`` (``prompt``/``response``: the lettered form, so the same file can
    be sharded; ``transcript``: the notes played)."""
    cfg = cfg or NotesConfig()
    samples = (mcqa_sample(seed, i, cfg) for i in range(num_samples))
    return write_clip_dataset(out_dir, split, samples, notes_mcqa_entry_fields)


def mcqa_entry_fields(sample: dict) -> dict:
    """Manifest fields of an MCQA sample: the layout `scripts.eval_mcqa` reads, plus the lettered
    ``prompt``/``response`` (so the same file can be sharded for training)."""
    return {
        "question": sample["question"],
        "choices": sample["choices"],
        "answer": sample["answer"],
        "kind": sample["kind"],
        "prompt": mcqa_prompt(sample["question"], sample["choices"]),
        "response": "ABCD"[sample["answer"]],
    }


def notes_mcqa_entry_fields(sample: dict) -> dict:
    """`mcqa_entry_fields` of a notes question, with the notes played as its ``transcript``."""
    return {**mcqa_entry_fields(sample), "transcript": " ".join(sample["notes"])}

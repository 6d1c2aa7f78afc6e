"""Held-out clips of the pretrained main job as chat samples, generation per kind, and their scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from recipes.data.samples import normalize_messages
from recipes.evaluation.transcripts import generate_responses
from recipes.hearing.scoring import agreement, word_error_rate, words

TRANSCRIPTION_KINDS = ("digits", "sentence")


def load_samples(data: Path, split: str = "heldout") -> list[dict]:
    """``data/<split>.jsonl`` as chat samples (``key``, ``kind``, ``category``, ``audio`` 16 kHz (T,) tensor,
    ``messages`` as the training reader builds them, ``reference``: the response)."""
    from recipes.inference.common import read_audio

    samples = []
    for line in (data / f"{split}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        samples.append(
            {
                "key": entry["key"],
                "kind": entry["kind"],
                "category": entry.get("category"),
                "text": entry["text"],
                "audio_path": str(data / entry["audio"]),
                "audio": torch.from_numpy(read_audio(data / entry["audio"])),
                "messages": normalize_messages(entry),
                "reference": entry["response"],
            }
        )
    return samples


def silenced(samples: Sequence[dict]) -> list[dict]:
    """The same samples with silence (zeros, same length) in place of each clip: the no-audio baseline."""
    return [{**s, "audio": torch.zeros_like(s["audio"])} for s in samples]


def generate_by_kind(
    model, processor, samples: Sequence[dict], max_new_tokens: dict[str, int], batch_size: int
) -> list[str]:
    """Greedy responses to ``samples`` (in order), each kind in its own batches with its own token limit."""
    out: list[str | None] = [None] * len(samples)
    for kind, limit in max_new_tokens.items():
        at = [i for i, s in enumerate(samples) if s["kind"] == kind]
        if not at:
            continue
        texts = generate_responses(model, processor, [samples[i] for i in at], batch_size, max_new_tokens=limit)
        for i, text in zip(at, texts):
            out[i] = text
    missing = sorted({s["kind"] for s, o in zip(samples, out) if o is None})
    if missing:
        raise ValueError(f"no token limit for the held-out kinds {missing}: give max_new_tokens for each")
    return [str(o) for o in out]


def transcription_wer(samples: Sequence[dict], hypotheses: Sequence[str]) -> dict[str, float]:
    """WER (`recipes.hearing.scoring`) per transcription kind and over both: ``{"digits", "sentence", "all"}``.
    The reference is what was spoken (``text``: "three one seven"), normalised like the hypothesis."""
    scores = {}
    for kind in (*TRANSCRIPTION_KINDS, "all"):
        at = [i for i, s in enumerate(samples) if (s["kind"] == kind or kind == "all") and s["kind"] != "question"]
        if at:
            scores[kind] = word_error_rate([hypotheses[i] for i in at], [samples[i]["text"] for i in at])
    return scores


def question_agreement(samples: Sequence[dict], answers: Sequence[str]) -> dict[str, float]:
    """Agreement of the spoken questions' answers with the LM's typed answers, per category and ``"all"``."""
    at = [i for i, s in enumerate(samples) if s["kind"] == "question"]
    scores = {"all": agreement([answers[i] for i in at], [samples[i]["reference"] for i in at])}
    for category in sorted({samples[i]["category"] for i in at}):
        rows = [i for i in at if samples[i]["category"] == category]
        scores[category] = agreement([answers[i] for i in rows], [samples[i]["reference"] for i in rows])
    return scores


def content_heard(samples: Sequence[dict], answers: Sequence[str]) -> dict[str, float]:
    """Per category and ``"all"``: the fraction of spoken questions whose answer holds every one of the question's
    `recipes.hearing.texts.content_words` (the country, the thing, both numbers, the fact's subject) -- a looser
    measure of hearing than agreement, which also asks for the LM's exact wording. Questions with no content word
    ("Name a colour.") are left out."""
    from recipes.hearing.texts import content_words

    rows = {}
    for i, s in enumerate(samples):
        if s["kind"] == "question" and (needed := content_words(s["text"], s["category"])):
            rows.setdefault(s["category"], []).append(set(needed) <= set(words(answers[i])))
    scores = {"all": sum(sum(r) for r in rows.values()) / max(1, sum(len(r) for r in rows.values()))}
    return scores | {category: sum(r) / len(r) for category, r in sorted(rows.items())}


def exact_digits(samples: Sequence[dict], hypotheses: Sequence[str]) -> float:
    """Fraction of digit clips transcribed exactly (as normalised words)."""
    at = [i for i, s in enumerate(samples) if s["kind"] == "digits"]
    return sum(words(hypotheses[i]) == words(samples[i]["text"]) for i in at) / max(1, len(at))

"""The pretrained main job's clips: spoken digits, spoken sentences and spoken questions, many eSpeak speakers.

Every clip is one manifest line (`recipes.synthetic.datasets.write_clip_dataset`) with ``prompt``, ``response``,
``text`` (what is spoken), ``kind`` (``digits`` / ``sentence`` / ``question``) and, for questions, ``category``
and ``transcript`` (the text twin of `recipes.losses.TextTeacherKL`; see `_entry_fields`). The response of a
question is the language model's own answer to the same question typed (`recipes.hearing.lm_answers`), so
training is self-distillation: the model learns to answer what it hears as it answers what it reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from recipes.synthetic.datasets import SyntheticDataset, _rng, shard_dataset, write_clip_dataset
from recipes.synthetic.speech import digits_sample
from recipes.synthetic.tts import random_speaker, synthesize

KINDS = ("digits", "sentence", "question")
SENTENCE_PROMPT = "Transcribe the speech."
QUESTION_PROMPT = ""  # the spoken question is the whole user turn; its typed twin is the question alone
_STREAM_SPEECH = 23


@dataclass(frozen=True)
class Utterance:
    """One clip to speak: ``text`` (spoken), the user ``prompt`` after the audio, the ``response`` to train on."""

    kind: str
    text: str
    prompt: str
    response: str
    category: str | None = None


def transcription_utterances(spoken: Sequence[str]) -> list[Utterance]:
    """Sentences to transcribe: the response is the sentence as written."""
    return [Utterance("sentence", s, SENTENCE_PROMPT, s) for s in spoken]


def question_utterances(texts: Sequence[str], categories: Sequence[str], answers: Sequence[str]) -> list[Utterance]:
    """Spoken questions whose responses are the LM's answers to them typed."""
    if not len(texts) == len(categories) == len(answers):
        raise ValueError(f"{len(texts)} questions, {len(categories)} categories, {len(answers)} answers")
    return [Utterance("question", t, QUESTION_PROMPT, a, c) for t, c, a in zip(texts, categories, answers)]


def _entry_fields(sample: dict) -> dict:
    """Manifest fields; only a QUESTION carries a ``transcript``: `recipes.losses.TextTeacherKL` distils the
    spoken questions (the teacher reading one answers it as the student should), and skips the transcription
    clips (``no_transcript``), whose typed twin ("three one seven Which digits are spoken?") would teach the
    student the teacher's reply to reading digits, not the digits. ``text`` is what is spoken, for every kind."""
    u: Utterance = sample["utterance"]
    fields = {"prompt": u.prompt, "response": u.response, "text": u.text, "kind": u.kind}
    if u.kind == "question":
        fields["transcript"] = u.text
    return {**fields, "category": u.category, "speaker": sample["speaker"]}


def _spoken(utterances: Sequence[Utterance], n_digits: int, seed: int) -> Iterator[dict]:
    """Digits clips (`recipes.synthetic.speech.digits_sample`, 3-5 digits), then each utterance spoken by its
    own random speaker (sample ``i`` depends only on ``(seed, i)``)."""
    for i in range(n_digits):
        d = digits_sample(seed, i)
        yield {**d, "utterance": Utterance("digits", d["text"], d["prompt"], d["response"])}
    for i, u in enumerate(utterances):
        speaker = random_speaker(_rng(seed, i, _STREAM_SPEECH))
        audio, sr = synthesize(u.text, speaker)
        key = f"{u.kind}_{seed}_{i:07d}"
        yield {"key": key, "audio": audio, "sampling_rate": sr, "speaker": asdict(speaker), "utterance": u}


def write_speech_split(
    out_dir: str | os.PathLike,
    split: str,
    n_digits: int,
    utterances: Sequence[Utterance],
    seed: int,
    progress=None,
) -> SyntheticDataset:
    """Speak ``n_digits`` digit strings and ``utterances`` into ``out_dir/<split>.jsonl`` + FLAC clips; no shards:
    the training runs read the splits made from these clips (`transcription_split`, `repeated_questions_split`).
    ``progress``: optional callable(clips written)."""

    def counted() -> Iterator[dict]:
        for n, sample in enumerate(_spoken(utterances, n_digits, seed), 1):
            yield sample
            if progress is not None:
                progress(n)

    return write_clip_dataset(out_dir, split, counted(), _entry_fields)


def transcription_split(out_dir: str | os.PathLike, source: str, split: str) -> SyntheticDataset:
    """``out_dir/<split>.jsonl`` + shards: the clips of ``source`` (its FLAC files, not spoken again), every one to
    transcribe -- a spoken question becomes a ``sentence`` whose response is its words (no ``transcript``: there
    is no typed twin to distil), the digits and sentences are as they were."""
    root = Path(out_dir)
    rows = [json.loads(line) for line in (root / f"{source}.jsonl").read_text(encoding="utf-8").splitlines()]
    manifest = root / f"{split}.jsonl"
    with open(manifest, "w", encoding="utf-8") as f:
        for row in rows:
            if row["kind"] == "question":
                row = {k: v for k, v in row.items() if k != "transcript"}
                row.update(kind="sentence", prompt=SENTENCE_PROMPT, response=row["text"], category=None)
            f.write(json.dumps(row) + "\n")
    keys = [r["key"] for r in rows]
    ds = SyntheticDataset(root=root, manifest=manifest, audio_dir=root / source / "audio", keys=keys)
    return shard_dataset(ds, split, maxcount=500)


def repeated_questions_split(out_dir: str | os.PathLike, source: str, split: str, repeats: int) -> SyntheticDataset:
    """``out_dir/<split>.jsonl`` + shards: the clips of ``source`` (its FLAC files, not spoken again) with every
    spoken question ``repeats`` times (the copies keyed ``<key>-r<n>``), the digits and sentences once: stage 2
    spends its few steps mostly on the questions, whose answers it must learn, without dropping transcription.
    The frozen encoder's cache is keyed by the audio's features, so a copy costs no encoding."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    root = Path(out_dir)
    rows = [json.loads(line) for line in (root / f"{source}.jsonl").read_text(encoding="utf-8").splitlines()]
    manifest = root / f"{split}.jsonl"
    keys = []
    with open(manifest, "w", encoding="utf-8") as f:
        for n in range(repeats):  # pass by pass: a question's copies lie a pass apart, not in one batch
            for row in rows if n == 0 else [r for r in rows if r["kind"] == "question"]:
                copy = row if n == 0 else {**row, "key": f"{row['key']}-r{n}"}
                keys.append(copy["key"])
                f.write(json.dumps(copy) + "\n")
    ds = SyntheticDataset(root=root, manifest=manifest, audio_dir=root / source / "audio", keys=keys)
    return shard_dataset(ds, split, maxcount=500)

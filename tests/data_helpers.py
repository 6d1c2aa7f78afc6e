"""Shard samples for the data and training tests: notes samples as tar members, long prompts, one-shard writer."""

from __future__ import annotations

import io
import json

import soundfile as sf
import webdataset as wds

from recipes.synthetic import notes_sample


def good_sample(seed: int, i: int, key: str | None = None, prompt: str | None = None) -> dict:
    """A notes sample as tar members (``prompt`` replaces the question)."""
    s = notes_sample(seed, i)
    buf = io.BytesIO()
    sf.write(buf, s["audio"], 16000, format="FLAC")
    record = {"prompt": prompt if prompt is not None else s["prompt"], "response": s["response"]}
    return {"__key__": key or s["key"], "flac": buf.getvalue(), "json": json.dumps(record).encode()}


def write_shard(path, samples) -> str:
    with wds.TarWriter(str(path)) as writer:
        for s in samples:
            writer.write(s)
    return str(path)


def long_prompt(n_bytes: int) -> str:
    """About ``n_bytes`` of plain English-like words (no repeats a tokenizer could merge into few tokens)."""
    words = "the quick brown fox jumps over a lazy dog while seven notes are played".split()
    out = " ".join(f"{words[i % len(words)]}{i % 97}" for i in range(n_bytes // 5 + 1))
    return out[:n_bytes]

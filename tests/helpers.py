"""Helper functions shared by the tests (fixtures shared by every test live in tests/conftest.py).

- audio and prompts: `tone_clip`, `write_tone`, `audio_prompt`;
- CLI tests (tests/scripts/test_cli_*.py): `save_tiny_checkpoint`;
- training tests (tests/training/): tiny shards, a data module and trainer factory, recorders, `single_thread`.
  `RankRecorder` is also used by the 2-process DDP test through the CLI (``--trainer.callbacks``), so it must be
  importable as ``tests.helpers.RankRecorder`` from the repository root;
- data tests: notes samples as tar members, long prompts, a one-shard writer;
- offline-parts tests (tests/pretrained/test_offline_parts*.py): their cache folder, eSpeak sentences, a word
  error rate.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from audio_adapter.testing import tiny_model_and_processor
from recipes.synthetic.datasets import notes_sample


def tone_clip(seconds: float, freq: float = 440.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic tone with a little noise, float32 (T,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def write_tone(path: Path, seconds: float, freq: float = 440.0, sr: int = 16000, seed: int = 0) -> Path:
    """A tone clip written with soundfile (format from the suffix)."""
    sf.write(str(path), tone_clip(seconds, freq, sr=sr, seed=seed), sr)
    return path


def audio_prompt(processor, question: str = "What do you hear?", n_clips: int = 1) -> str:
    content = [{"type": "audio"} for _ in range(n_clips)] + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def save_tiny_checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    """``model.save_pretrained(d); processor.save_pretrained(d)`` of a tiny random model; returns ``d``."""
    model, processor = tiny_model_and_processor(seed=seed, **overrides)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP spinning under
    contention made 20 steps take 20-70 s instead of ~1 s. Import this fixture into a test module to use it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_shards(root: Path, num: int = 16, seed: int = 0, maxcount: int = 4) -> dict:
    """Synthetic notes shards; returns {"glob", "keys"}."""
    from recipes.synthetic.datasets import make_notes_dataset

    ds = make_notes_dataset(root, num, seed=seed, maxcount=maxcount)
    return {"glob": str(Path(root) / "shards" / "*.tar"), "keys": list(ds.keys), "shards": list(ds.shards)}


def datamodule(
    shards: str, batch_size: int = 4, shuffle_buffer: int = 6, seed: int = 0, num_workers: int = 0, **kwargs
):
    from recipes.data.datamodule import AudioShardDataModule

    return AudioShardDataModule(
        train_shards=shards,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        **kwargs,
    )


def trainer(max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )
    defaults.update(kwargs)
    return pl.Trainer(max_steps=max_steps, callbacks=list(callbacks), **defaults)


class StepRecorder(pl.Callback):
    """Per optimizer step: loss, sample keys, and (with VLAT) a digest of the sampler state after the step."""

    def __init__(self):
        self.losses: list[float] = []
        self.keys: list[list[str]] = []
        self.vlat: list[str] = []
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.keys.append(list(batch["keys"]))
        self.steps.append(int(trainer.global_step))
        sampler = getattr(pl_module, "vlat_sampler", None)
        if sampler is not None:
            self.vlat.append(hashlib.sha1(sampler.generator.get_state().numpy().tobytes()).hexdigest())


def trainable_state(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


class RankRecorder(pl.Callback):
    """Writes ``out_dir/rank<r>.json`` (sample keys per step) and ``out_dir/rank<r>.pt`` (trainable tensors
    at the start and at the end of training) for every rank."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.keys: list[list[str]] = []
        self.losses: list[float] = []
        self.initial: dict | None = None

    def on_train_start(self, trainer, pl_module):
        self.initial = {k: v.cpu() for k, v in trainable_state(pl_module).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.keys.append(list(batch["keys"]))
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        (self.out_dir / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": trainer.world_size,
                    "keys": self.keys,
                    "losses": self.losses,
                    "global_step": trainer.global_step,
                }
            )
        )
        final = {k: v.cpu() for k, v in trainable_state(pl_module).items()}
        torch.save({"initial": self.initial, "final": final}, self.out_dir / f"rank{rank}.pt")


# Spoken by eSpeak NG (recipes/synthetic/tts.py), en-us at 120 words a minute: slow robotic speech tiny.en mostly
# follows.
SENTENCES = (
    "Please turn off the lights in the kitchen.",
    "three one seven",
    "The weather is nice today.",
    "Open the window and let the fresh air in.",
    "My phone number is five five five, one two three four.",
    "She sells sea shells by the sea shore.",
)
SPEECH_RATE = 120


def speech(text: str) -> np.ndarray:
    """``text`` spoken by eSpeak NG, resampled to 16 kHz mono float32 (T,)."""
    from audio_adapter.processing.audio_features import prepare_waveform
    from recipes.synthetic.tts import Speaker, synthesize

    audio, sr = synthesize(text, Speaker(voice="en-us", rate=SPEECH_RATE))
    return prepare_waveform(audio, sr).numpy()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after the scoring's `words` normalisation."""
    from recipes.evaluation.transcripts import edit_distance
    from recipes.hearing.scoring import words

    ref = words(reference)
    return edit_distance(words(hypothesis), ref), len(ref)


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

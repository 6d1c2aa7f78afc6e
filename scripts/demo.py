"""The main job. For now: run the tiny random model on a synthesised clip and print what it generates.

(The end-to-end demo — synthetic shards, two training stages, evaluation — replaces this.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console

from audio_adapter.testing import tiny_model_and_processor


def synth_notes(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freqs = rng.choice([261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88, 523.25], size=4)
    notes = np.concatenate([np.sin(2 * np.pi * f * t[: len(t) // 4]) for f in freqs])
    return (0.3 * notes + 0.01 * rng.standard_normal(notes.shape)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    model, processor = tiny_model_and_processor(seed=args.seed)
    clip = synth_notes(seed=args.seed)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Which notes are played?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], audio=[clip], sampling_rate=16000)
    n_audio = int((inputs["input_ids"] == model.config.audio_token_id).sum())
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    text = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])[0]
    console.print(f"clip: {len(clip) / 16000:.1f} s -> {n_audio} audio tokens")
    console.print(f"tiny random model generated: {text!r}")
    console.print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Benchmark the data pipeline.

1. Writes temporary shards of ``--clips`` (default 400) 10 s FLAC clips at 44.1 kHz, then streams them through
   the full reader -- tar -> FLAC decode -> resample to 16 kHz -> log-mel (128 bins, 30 s window) -> chat
   template + tokenise + labels -> padded batches -- with ``--workers`` (default 2) DataLoader workers, and
   prints clips/s of each whole pass (starting the workers included) and of its steady state (from the first
   batch on). Target: >= 200 clips/s for the best whole pass.
2. Log-mel throughput of our pure-torch extractor (``audio_adapter.audio_features``) against
   ``transformers.WhisperFeatureExtractor``'s numpy path on the same 10 s clips, measured in the same run,
   each with one thread, plus the largest feature difference between the two. Target: >= 5x.

    python scripts/bench_data.py            # < 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

TARGET_CLIPS_PER_S = 200.0
TARGET_MEL_SPEEDUP = 5.0


def make_clip(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """A busy 10 s clip (tones + noise): FLAC cannot shrink it to nothing, so decoding does real work."""
    t = np.arange(int(seconds * sr)) / sr
    freqs = rng.uniform(200, 2000, size=4)
    y = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) for f in freqs)
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t))
    return (y + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def write_bench_shards(root: Path, n_clips: int, seconds: float, sr: int, per_shard: int = 25) -> list[str]:
    import json

    import webdataset as wds

    rng = np.random.default_rng(0)
    base = [make_clip(rng, seconds, sr) for _ in range(8)]
    pattern = str(root / "bench-%04d.tar")
    shards: list[str] = []
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0, post=shards.append) as writer:
        for i in range(n_clips):
            audio = np.roll(base[i % len(base)], int(rng.integers(0, sr))) * rng.uniform(0.5, 1.0)
            path = root / "clip.flac"
            sf.write(path, audio.astype(np.float32), sr, format="FLAC", subtype="PCM_16")
            record = {"prompt": "Which notes are played?", "response": "C4 E4 G4 A4"}
            writer.write({"__key__": f"clip{i:05d}", "flac": path.read_bytes(), "json": json.dumps(record).encode()})
    return shards


def bench_pipeline(shards: list[str], processor, workers: int, batch_size: int) -> tuple[float, float, int, dict]:
    """One pass: (seconds in all, seconds it would take at the rate after the first batch, clips, skip counts)."""
    from recipes.data import AudioShardDataset, ShardLoader

    ds = AudioShardDataset(shards, processor, batch_size=batch_size, shuffle_buffer=0)
    loader = ShardLoader(ds, num_workers=workers, prefetch_factor=4 if workers else None)
    t0 = time.perf_counter()
    first = None
    n = n_first = 0
    for batch in loader:
        n += len(batch["keys"])
        if first is None:
            first, n_first = time.perf_counter(), n
    end = time.perf_counter()
    steady = (end - first) * n / max(n - n_first, 1)
    return end - t0, steady, n, loader.skip_counter.as_dict()


def profile_stages(
    shards: list[str], processor, rate: int, n_clips: int = 24, batch_size: int = 8
) -> dict[str, float]:
    """Milliseconds per clip of each stage, in this process with one thread (where the time goes)."""
    from audio_adapter.audio_features import extract_features
    from recipes.data import AudioCollator, decode_audio, iter_tar_samples, normalize_messages, parse_json_bytes, to_mono

    raws = []
    for url in shards:
        raws += [r for r in iter_tar_samples(url) if isinstance(r, dict)]
        if len(raws) >= n_clips:
            break
    raws = raws[:n_clips]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # warm-up: the resampling kernels and the mel filters are built on first use, then cached
        a, sr = decode_audio(raws[0]["flac"], "flac")
        extract_features(processor.prepare_audio([to_mono(a)], sr), processor.mel)
        t0 = time.perf_counter()
        decoded = [decode_audio(r["flac"], "flac") for r in raws]
        t1 = time.perf_counter()
        waves = [processor.prepare_audio([to_mono(a)], sr)[0] for a, sr in decoded]
        t2 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(waves), batch_size):
                extract_features(waves[i : i + batch_size], processor.mel)
        t3 = time.perf_counter()
        collate = AudioCollator(processor)
        samples = [
            {"key": r["__key__"], "audio": w, "messages": normalize_messages(parse_json_bytes(r["json"]))}
            for r, w in zip(raws, waves)
        ]
        t4 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(samples), batch_size):
                collate(samples[i : i + batch_size])
        t5 = time.perf_counter()
    finally:
        torch.set_num_threads(old_threads)
    n = len(raws)
    mel = (t3 - t2) / n * 1e3
    return {
        "decode (FLAC)": (t1 - t0) / n * 1e3,
        f"resample {rate / 1000:g}k -> 16k": (t2 - t1) / n * 1e3,
        "log-mel (batched)": mel,
        "template + tokenise + labels + pad": max(0.0, (t5 - t4) / n * 1e3 - mel),
    }


def bench_mel(processor, clips: list[np.ndarray], repeats: int = 2) -> dict:
    from transformers import WhisperFeatureExtractor

    from audio_adapter.audio_features import extract_features

    hf = WhisperFeatureExtractor(feature_size=processor.n_mels, chunk_length=int(processor.chunk_seconds))
    tensors = [torch.from_numpy(c) for c in clips]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like for like: the numpy path is single-threaded
    try:
        with torch.inference_mode():
            extract_features(tensors[:2], processor.mel)  # warm-up
            t0 = time.perf_counter()
            for _ in range(repeats):
                ours = extract_features(tensors, processor.mel)["input_features"]
            t_ours = (time.perf_counter() - t0) / repeats
        # WhisperFeatureExtractor takes its torch path whenever torch is importable; hide torch from it to
        # time the numpy path (padding to 30 s included, as the call does)
        import transformers.models.whisper.feature_extraction_whisper as fe_module

        saved = fe_module.is_torch_available
        fe_module.is_torch_available = lambda: False
        try:
            hf(clips[:2], sampling_rate=16000, return_tensors="np")
            t0 = time.perf_counter()
            for _ in range(repeats):
                ref = hf(clips, sampling_rate=16000, return_tensors="np")["input_features"]
            t_hf = (time.perf_counter() - t0) / repeats
        finally:
            fe_module.is_torch_available = saved
    finally:
        torch.set_num_threads(old_threads)
    diff = float(np.abs(ours.numpy() - ref).max())
    return {"ours_clips_s": len(clips) / t_ours, "hf_clips_s": len(clips) / t_hf, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=44100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mel-clips", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="pipeline passes; the best is reported")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from audio_adapter.testing import tiny_processor

    console = Console()
    processor = tiny_processor()  # the real Whisper geometry: 128 mel bins, 30 s windows
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        t0 = time.perf_counter()
        shards = write_bench_shards(Path(tmp), args.clips, args.seconds, args.rate)
        console.print(f"wrote {args.clips} x {args.seconds:g} s FLAC clips at {args.rate} Hz into {len(shards)} shards "
                      f"in {time.perf_counter() - t0:.1f} s")
        runs, steady_runs = [], []
        for epoch in range(args.epochs):
            seconds, steady, n, skips = bench_pipeline(shards, processor, args.workers, args.batch_size)
            if n != args.clips or skips:
                console.print(f"[red]pipeline yielded {n}/{args.clips} clips, skips {skips}[/red]")
                return 1
            runs.append(n / seconds)
            steady_runs.append(n / steady)
            console.print(f"pass {epoch + 1}: {n} clips in {seconds:.2f} s = {n / seconds:.0f} clips/s "
                          f"(steady state {n / steady:.0f} clips/s)")
        clips_per_s = max(runs)
        stages = profile_stages(shards, processor, args.rate)

    rng = np.random.default_rng(1)
    clips16 = [make_clip(rng, args.seconds, 16000) for _ in range(args.mel_clips)]
    mel = bench_mel(processor, clips16)
    speedup = mel["ours_clips_s"] / mel["hf_clips_s"]

    table = Table(title=f"data pipeline benchmark ({os.cpu_count()} cores, torch {torch.__version__})")
    table.add_column("measure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ok")
    table.add_row(
        f"decode+resample+mel+tokenize, {args.seconds:g} s clips @ {args.rate} Hz, {args.workers} workers",
        f"{clips_per_s:.0f} clips/s", f">= {TARGET_CLIPS_PER_S:.0f} clips/s", "yes" if clips_per_s >= TARGET_CLIPS_PER_S else "NO",
    )
    table.add_row("  the same after the first batch (steady state)", f"{max(steady_runs):.0f} clips/s", "", "")
    table.add_row("log-mel, ours (torch, 1 thread)", f"{mel['ours_clips_s']:.0f} clips/s", "", "")
    table.add_row("log-mel, WhisperFeatureExtractor (numpy)", f"{mel['hf_clips_s']:.0f} clips/s", "", "")
    table.add_row("log-mel speed-up", f"{speedup:.1f}x", f">= {TARGET_MEL_SPEEDUP:.0f}x", "yes" if speedup >= TARGET_MEL_SPEEDUP else "NO")
    table.add_row("log-mel max |ours - HF|", f"{mel['max_abs_diff']:.2e}", "", "")
    console.print(table)
    stage_table = Table(title="where a worker's time goes (ms per clip, 1 thread)")
    stage_table.add_column("stage")
    stage_table.add_column("ms / clip", justify="right")
    for name, ms in stages.items():
        stage_table.add_row(name, f"{ms:.1f}")
    total = sum(stages.values())
    stage_table.add_row("total (-> clips/s per worker)", f"{total:.1f} (-> {1000 / total:.0f})")
    console.print(stage_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

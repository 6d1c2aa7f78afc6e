"""Benchmark the data pipeline against the one people write by default, over the same shards in one run.

Writes temporary shards of ``--clips`` (default 240) 10 s FLAC clips at 44.1 kHz, then races, in interleaved
rounds (our pass, peer pass, then the other way round), over the same shards:

- ours: `recipes.data.dataset.AudioShardDataset` in the main process -- tar -> FLAC decode -> band-limited resampling
  to 16 kHz -> our torch log-mel (128 bins, 30 s windows) -> chat template + tokenise + labels -> padded
  batches of ``--batch-size``;
- peer: the default recipe -- `tarfile` -> `soundfile.read` -> `scipy.signal.resample_poly` ->
  `transformers.WhisperFeatureExtractor` (its default call, padding every clip to 30 s) -> the same chat
  template through the tokenizer, labels on the response, padded batches of the same size.

Both run single-threaded (torch 1 thread) and are timed in process CPU time, so the figure is what each
pipeline costs, not how long it waited for a core on a shared machine. Printed: ours / peer clips per CPU
second, median of per-round ratios with a 95 % bootstrap interval and PASS/FAIL (target >= 2x), then where
each spends its time (ms a clip per stage, one pass over 24 clips each). ``--workers N`` also times our
pipeline with N DataLoader workers in wall time (context only: absolute rates do not transfer between
machines).

    nice -n 10 python -m scripts.bench.data
    python -m scripts.bench.data --quick      # smoke size
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audio_adapter.encoders.audio_lengths import encoder_frames
from audio_adapter.encoders.whisper import SAMPLING_RATE

TARGET_SPEEDUP = 2.0
PROMPT = "Which notes are played?"
RESPONSE = "C4 E4 G4 A4"


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
            record = {"prompt": PROMPT, "response": RESPONSE}
            writer.write({"__key__": f"clip{i:05d}", "flac": path.read_bytes(), "json": json.dumps(record).encode()})
    return shards


def bench_pipeline(shards: list[str], processor, workers: int, batch_size: int) -> tuple[float, float, int, dict]:
    """One pass: (seconds in all, seconds it would take at the rate after the first batch, clips, skip counts)."""
    from recipes.data.dataset import AudioShardDataset
    from recipes.data.loader import ShardLoader

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


def profile_stages(shards: list[str], processor, rate: int, n_clips: int = 24, batch_size: int = 8) -> dict[str, float]:
    """CPU milliseconds per clip of each stage, in this process with one thread (where the time goes)."""
    from audio_adapter.processing.audio_features import extract_features
    from recipes.data.collate import AudioCollator
    from recipes.data.samples import decode_audio, normalize_messages, parse_json_bytes
    from recipes.data.shard_reader import iter_tar_samples

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
        extract_features(processor.prepare_audio([a], sr), processor.mel)
        t0 = time.process_time()
        decoded = [decode_audio(r["flac"], "flac") for r in raws]
        t1 = time.process_time()
        waves = [processor.prepare_audio([a], sr)[0] for a, sr in decoded]
        t2 = time.process_time()
        with torch.inference_mode():
            for i in range(0, len(waves), batch_size):
                extract_features(waves[i : i + batch_size], processor.mel)
        t3 = time.process_time()
        collate = AudioCollator(processor)
        samples = [
            {"key": r["__key__"], "audio": w, "messages": normalize_messages(parse_json_bytes(r["json"]))}
            for r, w in zip(raws, waves)
        ]
        t4 = time.process_time()
        with torch.inference_mode():
            for i in range(0, len(samples), batch_size):
                collate(samples[i : i + batch_size])
        t5 = time.process_time()
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


# ======================================================================================= the peer
def peer_samples(shards: list[str]):
    """(key, flac bytes, record) per sample, read with the standard library's `tarfile`."""
    import io
    import json
    import tarfile

    for url in shards:
        with tarfile.open(url) as tar:
            pending: dict[str, dict] = {}
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member.name.split(".", 1)
                entry = pending.setdefault(key, {})
                entry[ext] = tar.extractfile(member).read()
                if "flac" in entry and "json" in entry:
                    yield key, io.BytesIO(pending.pop(key)["flac"]), json.loads(entry["json"])


class PeerPipeline:
    """The default recipe: soundfile -> scipy.signal.resample_poly -> WhisperFeatureExtractor -> tokenizer.

    Keeps per-stage CPU seconds in `stage_seconds` (decode, resample, features, tokenise + labels + pad)."""

    def __init__(self, processor, batch_size: int):
        from transformers import WhisperFeatureExtractor

        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.batch_size = batch_size
        self.features = WhisperFeatureExtractor(
            feature_size=processor.n_mels, chunk_length=int(processor.chunk_seconds)
        )
        self.stage_seconds = dict.fromkeys(("decode", "resample", "features", "tokenise"), 0.0)

    def _stage(self, name: str, start: float) -> float:
        now = time.process_time()
        self.stage_seconds[name] += now - start
        return now

    def batches(self, shards: list[str]):
        batch = []
        for sample in peer_samples(shards):
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate(batch)
                batch = []
        if batch:
            yield self.collate(batch)

    def collate(self, batch) -> dict:
        from math import gcd

        from scipy.signal import resample_poly

        t = time.process_time()
        decoded = []
        for _, flac, _ in batch:
            audio, sr = sf.read(flac, dtype="float32")
            decoded.append((audio.mean(axis=1) if audio.ndim > 1 else audio, sr))
        t = self._stage("decode", t)
        waves = []
        for audio, sr in decoded:
            g = gcd(SAMPLING_RATE, sr)
            waves.append(resample_poly(audio, SAMPLING_RATE // g, sr // g).astype(np.float32))
        t = self._stage("resample", t)
        feats = self.features(waves, sampling_rate=SAMPLING_RATE, return_tensors="pt", return_attention_mask=True)
        t = self._stage("features", t)
        # Qwen2-Audio style placeholder expansion: one <|AUDIO|> per Whisper encoder frame of real audio
        frames = encoder_frames(feats["attention_mask"].sum(-1))
        prompts, texts = [], []
        for (_, _, record), n in zip(batch, frames.tolist()):
            messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": record["prompt"]}]}]
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            prompt = prompt.replace("<|AUDIO|>", "<|AUDIO|>" * n)
            prompts.append(prompt)
            texts.append(prompt + record["response"] + "<|im_end|>\n")
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        prompt_lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        for row, n in enumerate(prompt_lengths):
            labels[row, :n] = -100
        self._stage("tokenise", t)
        return {
            **encoded,
            "labels": labels,
            "input_features": feats["input_features"],
            "feature_attention_mask": feats["attention_mask"],
        }


def cpu_pass(batches) -> tuple[float, int]:
    """(process CPU seconds, clips) of one pass over an iterable of batches."""
    start = time.process_time()
    clips = 0
    for batch in batches:
        clips += len(batch["input_ids"])
    return time.process_time() - start, clips


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=44100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8, help="interleaved ours/peer passes")
    p.add_argument("--workers", type=int, default=0, help="also time our pipeline with N workers (wall clock)")
    p.add_argument("--quick", action="store_true", help="smoke size: 8 clips of 2 s, 2 rounds")
    return p


def race(shards: list[str], processor, peer: PeerPipeline, args: argparse.Namespace):
    """Interleaved CPU-time passes of our pipeline and the peer's over ``shards``; (the ratio, the peer's CPU ms
    a clip per stage over every pass)."""
    from recipes.data.dataset import AudioShardDataset
    from recipes.data.loader import ShardLoader
    from scripts.bench.stats import interleave, paired_ratio

    def ours_pass() -> float:
        ds = AudioShardDataset(shards, processor, batch_size=args.batch_size, shuffle_buffer=0)
        seconds, n = cpu_pass(ShardLoader(ds, num_workers=0))
        if n != args.clips:
            raise SystemExit(f"our pipeline yielded {n}/{args.clips} clips")
        return seconds

    def peer_pass() -> float:
        seconds, n = cpu_pass(peer.batches(shards))
        if n != args.clips:
            raise SystemExit(f"the peer pipeline yielded {n}/{args.clips} clips")
        return seconds

    peer.stage_seconds = dict.fromkeys(peer.stage_seconds, 0.0)
    samples = interleave({"ours": ours_pass, "peer": peer_pass}, rounds=args.rounds)
    peer_stages = {k: v / (args.clips * (args.rounds + 1)) * 1e3 for k, v in peer.stage_seconds.items()}
    result = paired_ratio("clips per CPU second, ours / peer", samples["peer"], samples["ours"], TARGET_SPEEDUP)
    return result, peer_stages


def stage_table(rate: int, ours_stages: dict[str, float], peer_stages: dict[str, float]):
    """Where the time goes: CPU ms a clip per stage, ours against the peer."""
    from rich.table import Table

    table = Table(title="where the time goes (CPU ms a clip)")
    table.add_column("stage")
    table.add_column("ours", justify="right")
    table.add_column("peer", justify="right")
    pairs = [
        ("decode", "decode (FLAC)"),
        ("resample", f"resample {rate / 1000:g}k -> 16k"),
        ("features", "log-mel (batched)"),
        ("tokenise", "template + tokenise + labels + pad"),
    ]
    for peer_key, ours_key in pairs:
        table.add_row(f"{peer_key}", f"{ours_stages[ours_key]:.1f}", f"{peer_stages[peer_key]:.1f}")
    table.add_row("total", f"{sum(ours_stages.values()):.1f}", f"{sum(peer_stages.values()):.1f}")
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.clips, args.seconds, args.rounds = 8, 2.0, 2

    from rich.console import Console

    from audio_adapter.testing import tiny_processor

    torch.set_num_threads(1)
    console = Console(width=200)
    processor = tiny_processor()  # the real Whisper geometry: 128 mel bins, 30 s windows
    peer = PeerPipeline(processor, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        shards = write_bench_shards(Path(tmp), args.clips, args.seconds, args.rate, per_shard=max(1, args.clips // 4))
        console.print(
            f"{args.clips} x {args.seconds:g} s FLAC clips at {args.rate} Hz in {len(shards)} shards; "
            f"batches of {args.batch_size}; 1 thread; process CPU time"
        )
        result, peer_stages = race(shards, processor, peer, args)
        console.print(result.describe())
        ours_stages = profile_stages(
            shards, processor, args.rate, n_clips=min(24, args.clips), batch_size=args.batch_size
        )
        workers_line = None
        if args.workers:
            seconds, steady, n, _ = bench_pipeline(shards, processor, args.workers, args.batch_size)
            workers_line = (
                f"ours with {args.workers} workers (wall clock, context only): {n / seconds:.0f} clips/s "
                f"in all, {n / steady:.0f} after the first batch"
            )
    console.print(stage_table(args.rate, ours_stages, peer_stages))
    if workers_line:
        console.print(workers_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

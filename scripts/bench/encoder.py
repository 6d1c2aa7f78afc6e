"""Benchmark: encoding only the real audio (`audio_encode_real_frames_only`) against Whisper's padded windows.

For clips of 1, 5, 10 and 30 s, `get_audio_features` (Whisper encoder + projector) runs in interleaved rounds
with the option off (every window padded to 30 s, stock) and on (each window cut to the mel frames of its real
audio). Printed per clip length: speed-up padded / real-only (this thread's CPU time, median of per-round
ratios with a 95 % bootstrap interval; target for 5 s: >= 4x) and how much the output changes: relative L2
distance ||real - padded|| / ||padded|| of the projected audio tokens and of the encoder states, and their
mean cosine similarity.

The encoder has whisper-tiny's geometry (d_model 384, 4 layers, 6 heads, 1536 MLP; 128 mel bins, 30 s
windows), randomly initialised: the speed-up carries over to larger encoders (attention grows with the
square of the frames, so it only gets larger), the output change does not -- it depends on the trained
weights and must be re-measured on a real checkpoint before switching the option on.

    nice -n 10 python -m scripts.bench.encoder
    python -m scripts.bench.encoder --quick
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table

from audio_adapter.encoders.audio_lengths import encoder_frames
from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.testing import tiny_model_and_processor
from scripts.bench.stats import RatioResult, interleave, paired_ratio, timed

TARGET_5S = 4.0
WHISPER_TINY = dict(audio_d_model=384, audio_layers=4, audio_heads=6, audio_ffn_dim=1536)


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """Noise bursts under a syllable-rate envelope: busy enough that every mel frame carries signal."""
    generator = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLING_RATE)
    t = torch.arange(n) / SAMPLING_RATE
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4.0 * t))
    return 0.2 * envelope * torch.randn(n, generator=generator) + 0.1 * torch.sin(2 * torch.pi * 220.0 * t)


def relative_change(real: torch.Tensor, padded: torch.Tensor) -> tuple[float, float]:
    """(||real - padded|| / ||padded||, mean cosine similarity of rows)."""
    rel = ((real - padded).norm() / padded.norm()).item()
    cos = torch.nn.functional.cosine_similarity(real, padded, dim=-1).mean().item()
    return rel, cos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0, 10.0, 30.0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke size: the test model's encoder, 2 rounds")
    return parser


def measure_clip(model, processor, seconds: float, rounds: int) -> tuple[RatioResult, list[str], float]:
    """Race padded against real-only encoding of one clip; (the ratio, its table row, padded median seconds)."""
    inputs = processor(
        text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[speech_like(seconds)], sampling_rate=SAMPLING_RATE
    )
    features, mask = inputs["input_features"], inputs["input_features_mask"]

    def run(real_only: bool):
        def call() -> None:
            model.config.audio_encode_real_frames_only = real_only
            with torch.no_grad():
                model.get_audio_features(features, mask)

        return timed(call)

    samples = interleave({"padded": run(False), "real": run(True)}, rounds=rounds)
    target = TARGET_5S if seconds == 5.0 else None
    result = paired_ratio(f"{seconds:g} s", samples["padded"], samples["real"], target)
    with torch.no_grad():
        model.config.audio_encode_real_frames_only = False
        padded = model.get_audio_features(features, mask)
        padded_states = model.encode_audio_windows(features, mask)
        model.config.audio_encode_real_frames_only = True
        real = model.get_audio_features(features, mask)
        real_states = model.encode_audio_windows(features, mask)
    model.config.audio_encode_real_frames_only = False
    frames = min(real_states.shape[1], int(encoder_frames(mask.sum(-1)[0])))
    token_rel, token_cos = relative_change(real, padded)
    state_rel, _ = relative_change(real_states[:, :frames], padded_states[:, :frames])
    row = [
        f"{seconds:g} s",
        f"{result.median:.2f}x [{result.low:.2f}, {result.high:.2f}]",
        f">= {target:g}x" if target else "",
        result.verdict,
        f"{token_rel:.3f}",
        f"{token_cos:.3f}",
        f"{state_rel:.3f}",
    ]
    return result, row, statistics.median(samples["padded"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = [1.0, 5.0], 2
    torch.set_num_threads(args.threads)
    console = Console(width=200)
    model, processor = tiny_model_and_processor(seed=0, **({} if args.quick else WHISPER_TINY))
    audio_config = model.config.audio_config
    console.print(
        f"encoder d_model {audio_config.d_model}, {audio_config.encoder_layers} layers; {args.threads} "
        "thread(s), this thread's CPU time, interleaved rounds"
    )

    table = Table(title="encode only real audio vs padded 30 s windows (get_audio_features)")
    for col in (
        "clip",
        "speed-up padded / real-only [95 % CI]",
        "target",
        "verdict",
        "token rel. L2 change",
        "token cosine",
        "encoder-state rel. L2 change",
    ):
        table.add_column(col)
    for seconds in args.seconds:
        result, row, padded_median = measure_clip(model, processor, seconds, args.rounds)
        table.add_row(*row)
        console.print(result.describe() + f"  (padded median {padded_median * 1e3:.1f} ms)")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

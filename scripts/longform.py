"""The long-form benchmark in miniature: train only on short recordings, evaluate 1x/2x/4x/8x longer ones.

    python -m scripts.longform --out runs/longform            # the full run (about 23 CPU-minutes of one core)
    python -m scripts.longform --out runs/longform --quick    # every step at smoke scale (seconds)
    # the same work spread over processes (one thread each) once the first has written cache.pt, then collected:
    python -m scripts.longform --out runs/longform --threads 1 --only vanilla_s0 vlat_s1 &
    python -m scripts.longform --out runs/longform --threads 1 --only vanilla_s1 vlat_s0 vlatmix_s0; wait
    python -m scripts.longform --out runs/longform

Steps (each result is written as soon as it exists; re-running the same command resumes):

1. A stand-in encoder (the tiny Whisper encoder fitted with a CTC head on the tone items, then frozen; no
   pretrained Whisper can be downloaded here). Its pooled frames of every recording are computed once and
   cached: the encoder sees one 5.12 s window at a time, so it contributes no long-range positions.
2. Training, only on recordings of 4..16 items (16..64 audio tokens; trained length T = 64 tokens = 5.12 s):
   the projector and the whole tiny language model learn from scratch (a random LM adapted with LoRA has no
   positional behaviour of its own to extend). Vanilla runs see raw positions 0..L-1 only; the script records
   the largest position any training prompt had and refuses to go on if a long evaluation does not reach past it.
   The VLAT twin trains the same way with `virtual_audio_tokens` drawn by `VirtualLengthSampler("limited")`;
   the variant ``vlat_mix`` (not the paper's) keeps raw positions for half of its samples.
3. Evaluation of the three questions (`recipes.longform.task`) at 16/32/64/128 items (1x/2x/4x/8x T) with
   none, partial_pi, partial_yarn (cutoff 4: the rotary pairs with wavelengths of 6-35 tokens keep raw
   positions; t 1.0), whole_pi, whole_yarn from the base T; the VLAT runs with none and partial_pi.
   Control: `partial_pi` puts every audio position of a long recording back inside 0..T (the LM has seen each
   of them); where it recovers what `none` loses on the same recordings, the content is still answerable and
   the loss was positional. `last` (answer next to the question) is the near-answer control.
4. The Partial YaRN cutoff x temperature sweep at the longest length (`scripts.sweep`'s CSV, table, heatmap).

Outputs in ``--out``: results.jsonl (one line per cell), longform.csv, longform.png (accuracy against audio
length, one line per method, a panel per question), sweep.csv / sweep.png, summary.json.

Code: step 1 in `recipes.longform.cache`, 2 in `recipes.longform.train`, 3-4 in `recipes.longform.evaluate`, the
outputs in `recipes.longform.report`, the settings in `recipes.longform.config`, the order of the steps in
`recipes.longform.run`; this file is the CLI.
"""

from __future__ import annotations

import argparse
import sys

from recipes.longform.config import LongformConfig
from recipes.longform.run import run_longform


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/longform")
    parser.add_argument("--quick", action="store_true", help="every step at smoke scale (learns nothing)")
    parser.add_argument("--vanilla-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--vlat-seeds", type=int, nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps of the vanilla runs")
    parser.add_argument("--vlat-steps", type=int, default=None, help="training steps of the VLAT runs")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="RUN",
        help="train/evaluate only these runs now (e.g. vanilla_s1 vlat_s0), to share the work "
        "between processes on one --out; a final call without --only collects all",
    )
    parser.add_argument("--eval-n", type=int, default=None, help="recordings per length")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --quick: 1)")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LongformConfig:
    """The `LongformConfig` of the parsed flags (parser.error on a count below 1)."""
    cfg = LongformConfig.quick(out_dir=args.out) if args.quick else LongformConfig(out_dir=args.out)
    if args.threads is not None:
        cfg.threads = args.threads
    if args.vanilla_seeds is not None:
        cfg.vanilla_seeds = tuple(args.vanilla_seeds)
    if args.vlat_seeds is not None:
        cfg.vlat_seeds = tuple(args.vlat_seeds)
    for flag, name in (("--steps", "steps"), ("--vlat-steps", "vlat_steps"), ("--eval-n", "eval_n")):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"{flag} must be >= 1, got {value}")
            setattr(cfg, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run_longform(config_from_args(parser, args), only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

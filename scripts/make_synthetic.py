"""Synthetic data for the offline demo and tests (deterministic for a seed).

    python scripts/make_synthetic.py notes --out data/notes --num 1500 --seed 0            # train split
    python scripts/make_synthetic.py notes --out data/notes --num 100 --seed 1 --split val
    python scripts/make_synthetic.py notes --out data/long --num 20 --long-seconds 40       # clips > 30 s
    python scripts/make_synthetic.py mcqa --out data/mcqa --num 200 --seed 2
    python -m scripts.make_synthetic digits --out data/digits --num 1500 --seed 0         # spoken digits
    python -m scripts.make_synthetic speech-mcqa --out data/smcqa --num 100 --min-seconds 5 --max-seconds 120

``notes``: 3-6 pure tones (C4..C5) -> "C4 E4 G4 A4"; writes FLAC clips, ``<split>.jsonl`` and shards
``shards/<split>-%06d.tar``. ``mcqa``: four-choice questions about the notes (JSONL with audio, question,
choices, answer index; add ``--shards`` to shard its lettered prompt/response form too).
``digits``: 3-5 spoken digits (eSpeak NG, offline; varied voices) -> "3 7 1"; FLAC + manifest + shards like
``notes``. ``speech-mcqa``: spoken word sequences from seconds to minutes long with four-choice questions
(which word came right after X / first / last), in the layout ``scripts.eval_mcqa`` reads.
"""

from __future__ import annotations

import argparse
import sys

from audio_adapter.audio_lengths import SAMPLING_RATE
from recipes.synthetic import NotesConfig, make_mcqa_dataset, make_notes_dataset

DEFAULT_SPLITS = {"notes": "train", "mcqa": "mcqa", "digits": "train", "speech-mcqa": "speech_mcqa"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=list(DEFAULT_SPLITS))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num", type=int, default=1500, help="number of clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help=f"split name (default: {DEFAULT_SPLITS})")
    p.add_argument("--sampling-rate", type=int, default=SAMPLING_RATE)
    p.add_argument("--min-notes", type=int, default=3)
    p.add_argument("--max-notes", type=int, default=6)
    p.add_argument("--long-seconds", type=float, default=None, help="make every clip at least this long")
    p.add_argument("--noise", type=float, default=0.005)
    p.add_argument("--min-digits", type=int, default=3, help="digits: fewest digits per clip")
    p.add_argument("--max-digits", type=int, default=5, help="digits: most digits per clip")
    p.add_argument("--min-seconds", type=float, default=5.0, help="speech-mcqa: shortest recording (approximate)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="speech-mcqa: longest recording (approximate)")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    p.add_argument("--no-shards", action="store_true", help="notes/digits: only audio files + manifest")
    p.add_argument("--shards", action="store_true", help="mcqa/speech-mcqa: also write shards")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = NotesConfig(
        sampling_rate=args.sampling_rate,
        min_notes=args.min_notes,
        max_notes=args.max_notes,
        long_seconds=args.long_seconds,
        noise=args.noise,
    )
    split = args.split or DEFAULT_SPLITS[args.task]
    if args.task in ("digits", "speech-mcqa"):
        from recipes.speech_synthetic import make_digits_dataset, make_speech_mcqa_dataset

        if args.task == "digits":
            ds = make_digits_dataset(
                args.out,
                args.num,
                seed=args.seed,
                split=split,
                min_digits=args.min_digits,
                max_digits=args.max_digits,
                write_shards=not args.no_shards,
                maxcount=args.maxcount,
                progress=True,
            )
        else:
            ds = make_speech_mcqa_dataset(
                args.out,
                args.num,
                seed=args.seed,
                split=split,
                min_seconds=args.min_seconds,
                max_seconds=args.max_seconds,
                write_shards=args.shards,
                maxcount=args.maxcount,
                progress=True,
            )
    elif args.task == "notes":
        ds = make_notes_dataset(
            args.out,
            args.num,
            seed=args.seed,
            cfg=cfg,
            split=args.split or "train",
            write_shards=not args.no_shards,
            maxcount=args.maxcount,
            progress=True,
        )
    else:
        ds = make_mcqa_dataset(args.out, args.num, seed=args.seed, cfg=cfg, split=args.split or "mcqa")
        if args.shards:
            from recipes.shard_writer import write_shards

            pattern = str(ds.root / "shards" / f"{args.split or 'mcqa'}-%06d.tar")
            summary = write_shards(ds.manifest, pattern, maxcount=args.maxcount, progress=True)
            ds.shards, ds.shard_pattern = summary.shards, pattern
    print(f"{len(ds.keys)} clips in {ds.audio_dir}; manifest {ds.manifest}")
    if ds.shards:
        print(f"{len(ds.shards)} shard(s): {ds.shard_pattern}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""JSONL manifest -> WebDataset shards.

Each manifest line: ``audio`` (path; relative paths are resolved against the manifest's folder), optional
``image``, either ``prompt`` + ``response`` or ``messages``, optional ``key``, optional ``transcript`` (what the
audio says; read by ``recipes.losses.TextTeacherKL``, which skips samples without one). Every sample is validated
(audio decodes and is non-empty and finite, JSON fields, image decodes) before it is written; bad lines are
skipped with a reason and listed in the summary.

    python scripts/make_shards.py data/train.jsonl "data/shards/train-%06d.tar" --maxcount 1000
"""

from __future__ import annotations

import argparse
import sys

from recipes.data.shard_writer import print_write_summary, write_shards


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="JSONL manifest")
    p.add_argument("output", help="output pattern with a %%-format for the shard number, e.g. out/train-%%06d.tar")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--maxsize", type=float, default=1e9, help="bytes per shard (default 1e9)")
    p.add_argument("--max-audio-seconds", type=float, default=None, help="skip clips longer than this")
    p.add_argument("--base-dir", default=None, help="resolve relative paths here instead of the manifest's folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any line was skipped")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = write_shards(
        args.manifest,
        args.output,
        maxcount=args.maxcount,
        maxsize=args.maxsize,
        max_audio_seconds=args.max_audio_seconds,
        base_dir=args.base_dir,
        progress=not args.no_progress,
    )
    print_write_summary(summary)
    if summary.written == 0:
        print("no sample was written", file=sys.stderr)
        return 1
    return 1 if args.strict and summary.total_skipped else 0


if __name__ == "__main__":
    sys.exit(main())

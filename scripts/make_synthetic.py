"""Synthetic data for the offline demo and tests (deterministic for a seed), one subcommand per registered task
(`recipes.synthetic.tasks.TASKS`).

    python -m scripts.make_synthetic notes --out data/notes --num 1500 --seed 0            # train split
    python -m scripts.make_synthetic notes --out data/notes --num 100 --seed 1 --split val
    python -m scripts.make_synthetic notes --out data/long --num 20 --long-seconds 40      # clips > 30 s
    python -m scripts.make_synthetic mcqa --out data/mcqa --num 200 --seed 2
    python -m scripts.make_synthetic digits --out data/digits --num 1500 --seed 0         # spoken digits
    python -m scripts.make_synthetic speech-mcqa --out data/smcqa --num 100 --min-seconds 5 --max-seconds 120
    python -m scripts.make_synthetic notes --help                                          # a task's options

Every task writes the same layout with the same defaults: FLAC clips under ``<out>/<split>/audio``, the manifest
``<out>/<split>.jsonl`` (prompt, response, transcript and the task's own fields) and the shards
``<out>/shards/<split>-%06d.tar`` (``--no-shards``: clips and manifest only). ``--split`` defaults to the task's
own split name (``train``; ``mcqa`` and ``speech_mcqa`` for the question sets).
"""

from __future__ import annotations

import argparse
import sys

from recipes.synthetic.tasks import get_task, task_names, write_task_dataset


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder")
    common.add_argument("--num", type=int, default=1500, help="number of clips (default 1500)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--split", default=None, help="split name (default: the task's)")
    common.add_argument("--maxcount", type=int, default=1000, help="samples per shard (default 1000)")
    common.add_argument("--no-shards", action="store_true", help="only the audio files and the manifest")
    common.add_argument("--shards", action="store_true", help=argparse.SUPPRESS)  # the default; old command lines
    return common


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True, metavar="task")
    common = _common_options()
    for name in task_names():
        task = get_task(name)
        tp = sub.add_parser(name, parents=[common], help=task.description, description=task.description)
        for option in task.options:
            shown = "" if option.default is None else f" (default {option.default})"
            flag = "--" + option.name.replace("_", "-")
            tp.add_argument(flag, dest=option.name, type=option.type, default=option.default, help=option.help + shown)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task = get_task(args.task)
    options = {o.name: getattr(args, o.name) for o in task.options}
    ds = write_task_dataset(
        task,
        args.out,
        args.num,
        seed=args.seed,
        split=args.split,
        shards=not args.no_shards,
        maxcount=args.maxcount,
        progress=True,
        **options,
    )
    print(f"{len(ds.keys)} clips in {ds.audio_dir}; manifest {ds.manifest}")
    if ds.shards:
        print(f"{len(ds.shards)} shard(s): {ds.shard_pattern}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

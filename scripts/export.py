"""Merge a training stage's outputs into a full checkpoint directory that loads offline with
``AudioVLMForConditionalGeneration.from_pretrained(dir)`` and ``AudioVLMProcessor.from_pretrained(dir)``.

    python -m scripts.export --run runs/tiny/stage2 --out runs/tiny/merged
    python -m scripts.export --run runs/qwen2vl7b/stage2 --out ckpt/audio-qwen2vl-7b --dtype bfloat16 \
        --vlm /models/Qwen2-VL-7B-Instruct --whisper /models/whisper-large-v3-turbo      # local copies of the base

The base model is rebuilt from the run's ``training_spec.json`` (tiny seed + overrides, or the Qwen2-VL +
Whisper checkpoints, the projector type; ``--vlm/--whisper/--base`` point elsewhere), then the run's
``projector.safetensors`` (the projector's whole state dict + audio-token rows) is loaded and, for stage 2, the
LoRA adapter is merged with peft's ``merge_and_unload``. A QLoRA run is merged into a full-precision base (never
into 4-bit weights). ``--out`` must be new, empty or an earlier export (which is replaced whole); any other
folder is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys

import torch

from recipes.training.export import export
from recipes.training.model_spec import DTYPES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="stage output directory (projector.safetensors [+ adapter/])")
    p.add_argument("--out", required=True, help="folder for the merged checkpoint (model + processor)")
    p.add_argument("--base", default=None, help="rebuild the base from this save_pretrained directory instead")
    p.add_argument("--vlm", default=None, help="Qwen2-VL checkpoint (overrides the run's spec)")
    p.add_argument("--whisper", default=None, help="Whisper checkpoint (overrides the run's spec)")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="dtype of the saved weights (default: as trained)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out that is not an earlier export (its files are deleted)",
    )
    args = p.parse_args(argv)
    paths = dict(base=args.base, vlm=args.vlm, whisper=args.whisper)
    with torch.no_grad():  # scoped: main() is also called in-process (tests), where a global switch would leak
        out = export(args.run, args.out, **paths, dtype=args.dtype, overwrite=args.overwrite)
    print(f"merged checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Assemble a checkpoint folder that every CLI loads (``--model DIR``) from a Qwen2-VL and a Whisper checkpoint.

    python -m scripts.assemble --vlm Qwen/Qwen2-VL-7B-Instruct --whisper openai/whisper-large-v3-turbo \\
        --out ckpt/audio-qwen2vl-base --dtype bfloat16

This is `load_pretrained_parts` + `AudioVLMProcessor.from_parts` + ``save_pretrained``. The projector is
freshly initialised: the model hears nothing useful until it is trained (``scripts.train``); a trained run is
turned into such a folder by ``scripts.export`` instead. The folder is written under a temporary name and
renamed when complete, so an interrupted run leaves no half-written checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from recipes.inference.common import save_model_folder
from recipes.training.model_spec import DTYPES


def assemble(
    vlm: str, whisper: str, out: str | os.PathLike, dtype: str | None = None, audio_pool_stride: int = 1
) -> Path:
    """Write the assembled model + processor to ``out`` (must not exist yet); returns ``out``."""
    from audio_adapter import AudioVLMProcessor, load_pretrained_parts

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out folder")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    processor = AudioVLMProcessor.from_parts(vlm, whisper)  # its tokenizer is read once, for both
    model = load_pretrained_parts(
        vlm,
        whisper,
        tokenizer=processor.tokenizer,
        audio_pool_stride=audio_pool_stride,
        dtype=None if dtype is None else DTYPES[dtype],
    )
    processor.audio_frames_per_token = model.config.audio_frames_per_token  # the model's length rule divisor
    return save_model_folder(model, processor, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vlm", required=True, help="Qwen2-VL checkpoint (hub id or folder)")
    p.add_argument("--whisper", required=True, help="Whisper checkpoint (hub id or folder); only its encoder is used")
    p.add_argument("--out", required=True, help="new folder for the assembled checkpoint")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype (default: the checkpoint's)")
    p.add_argument("--audio-pool-stride", type=int, default=1, help="encoder frames averaged per audio token")
    args = p.parse_args(argv)
    with torch.no_grad():
        out = assemble(args.vlm, args.whisper, args.out, dtype=args.dtype, audio_pool_stride=args.audio_pool_stride)
    print(f"assembled checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import json
import sys
from pathlib import Path

import torch

from recipes.model_spec import DTYPES, ModelSpec
from recipes.module import ADAPTER_DIR, CONFIG_FILE, SPEC_FILE
from recipes.projector_file import audio_token_ids, load_projector_file
from scripts._common import check_export_target, save_model_folder


def export(
    run: str | Path,
    out: str | Path,
    *,
    base: str | None = None,
    vlm: str | None = None,
    whisper: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the merged checkpoint of stage output directory ``run`` to ``out``; returns ``out``.

    A non-empty ``out`` is replaced only when it is an earlier export (`scripts._common.check_export_target`)
    or with ``overwrite``: refused before anything is built, so no other folder's files are ever deleted."""
    from audio_adapter import AudioVLMProcessor

    run, out = Path(run), Path(out)
    check_export_target(out, overwrite)
    spec_file = run / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{spec_file} not found: --run must be a stage output directory (model.output_dir)")
    saved = json.loads(spec_file.read_text())
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    spec = ModelSpec.from_dict(saved)
    spec.dtype = dtype or ("float32" if saved.get("quantization") else saved.get("dtype") or "float32")
    spec.quantization = None  # a QLoRA run is merged into a full-precision base
    spec.model = base or spec.model
    spec.vlm, spec.whisper = vlm or spec.vlm, whisper or spec.whisper
    if spec.model == "prebuilt":
        raise ValueError("this run was trained on a model object, not a spec: give the base directory with --base")
    model, _ = spec.build()
    processor = AudioVLMProcessor.from_pretrained(run)

    saved_config = run / CONFIG_FILE
    if saved_config.is_file():
        saved = json.loads(saved_config.read_text())
        expected = [saved.get(k) for k in ("audio_bos_token_id", "audio_token_id", "audio_eos_token_id")]
        if expected != audio_token_ids(model.config):
            raise ValueError(
                f"rebuilt base has audio token ids {audio_token_ids(model.config)}, the run used {expected}"
            )
    load_projector_file(model, run)
    adapter = run / ADAPTER_DIR
    if adapter.is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise RuntimeError("LoRA layers remain after merging")
    model.eval()
    return save_model_folder(model, processor, out, overwrite=overwrite)


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

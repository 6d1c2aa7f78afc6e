"""Merge a finished training run into a full checkpoint folder that `from_pretrained` loads (`scripts.export` is its
CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from recipes.inference.common import check_export_target, save_model_folder
from recipes.training.model_spec import DTYPES, ModelSpec
from recipes.training.module import ADAPTER_DIR, CONFIG_FILE, SPEC_FILE
from recipes.training.projector_file import audio_token_ids, load_projector_file


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

    A non-empty ``out`` is replaced only when it is an earlier export (`recipes.inference.common.check_export_target`)
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

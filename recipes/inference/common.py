"""Helpers shared by the inference / evaluation CLIs (`generate.py`, `eval_mcqa.py`, `sweep.py`,
`extract_features.py`): load a checkpoint directory, read audio files at 16 kHz, build chat prompts, and
turn the context-extension command-line options into an `AudioContextExtension` on the model.

A checkpoint directory is what ``model.save_pretrained(d); processor.save_pretrained(d)`` writes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from extension.config import METHODS, AudioContextExtension
from recipes.training.model_spec import DTYPES, ModelSpec

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------ loading
def default_device() -> str:
    """ "cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model_and_processor(model_dir: str | os.PathLike, device: str | None = None, dtype: str | None = None):
    """Load ``(AudioVLMForConditionalGeneration, AudioVLMProcessor)`` from a directory written by
    ``save_pretrained`` (no network). The model is in eval mode on ``device`` (default: `default_device`);
    ``dtype`` is one of `DTYPES` (default: as saved)."""
    from audio_adapter.model.audio_checks import check_processor_matches_model

    path = Path(model_dir)
    check_assembled_checkpoint(path)
    # an absolute path: a folder named "tiny" or "pretrained" is still a folder
    model, processor = ModelSpec(model=str(path.resolve()), dtype=dtype).build()
    try:
        check_processor_matches_model(processor, model.config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return model.to(device or default_device()).eval(), processor


ASSEMBLE_HINT = (
    "assemble one first: python -m scripts.assemble --vlm <Qwen2-VL or Qwen2.5-VL checkpoint> "
    "--whisper <Whisper checkpoint> --out <folder> (or python -m scripts.export for a trained run), "
    "then pass --model <folder>"
)


def check_assembled_checkpoint(path: Path) -> None:
    """Refuse, before loading any weight, a folder that is not an assembled audio model (model + processor
    written by save_pretrained): a raw Qwen2-VL or Whisper checkpoint would otherwise be loaded in full (with a
    randomly initialised audio encoder) before failing."""
    import json

    from audio_adapter.families import FAMILIES
    from audio_adapter.processing.processor import AUDIO_PROCESSOR_CONFIG, LEGACY_AUDIO_PROCESSOR_CONFIG

    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: --model must be a checkpoint folder; {ASSEMBLE_HINT}")
    model_type = json.loads(config_file.read_text()).get("model_type")
    saved_types = sorted(family.config_class.model_type for family in FAMILIES.values())
    if model_type not in saved_types:
        raise ValueError(
            f"{path} is a {model_type!r} checkpoint, not an assembled audio model (one of {saved_types}); "
            f"{ASSEMBLE_HINT}"
        )
    if not any((path / name).is_file() for name in (AUDIO_PROCESSOR_CONFIG, LEGACY_AUDIO_PROCESSOR_CONFIG)):
        raise FileNotFoundError(
            f"{path / AUDIO_PROCESSOR_CONFIG} not found: the processor was not saved; {ASSEMBLE_HINT}"
        )


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``, ``--device``, ``--dtype``."""
    parser.add_argument("--model", required=True, help="checkpoint directory (model + processor, save_pretrained)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype (default: as saved)")


# ------------------------------------------------------------------------------------------ audio
# Bytes read at most per audio file: 1 GiB holds 1 h of 48 kHz stereo 24-bit WAV. A bigger file, or an endless
# one (/dev/zero, a pipe), is refused instead of filling memory.
MAX_AUDIO_FILE_BYTES = 1 << 30
_READ_CHUNK = 8 << 20


def read_audio_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of an audio file; ValueError naming the file when it holds more than ``max_bytes`` (default
    `MAX_AUDIO_FILE_BYTES`)."""
    path = Path(path)
    max_bytes = MAX_AUDIO_FILE_BYTES if max_bytes is None else max_bytes
    too_big = f"cannot read audio {path}: more than {max_bytes:,} bytes (the limit per clip); split or compress it"
    data = bytearray()
    with open(path, "rb") as f:
        if path.is_file() and os.fstat(f.fileno()).st_size > max_bytes:
            raise ValueError(too_big)  # known from its size, before reading anything
        # in chunks up to one byte past the limit: a device or a pipe has no size to check first
        while len(data) <= max_bytes and (chunk := f.read(min(_READ_CHUNK, max_bytes + 1 - len(data)))):
            data += chunk
    if len(data) > max_bytes:
        raise ValueError(too_big)
    return bytes(data)


def read_audio(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """Read an audio file (flac/wav/ogg/mp3 where libsndfile can; at most ``max_bytes``, default
    `MAX_AUDIO_FILE_BYTES`) -> float32 mono (T,) at 16 kHz. ValueError (or OSError) naming the file when it
    cannot be read."""
    from audio_adapter.processing.audio_features import prepare_waveform
    from recipes.data.samples import decode_audio
    from recipes.data.skips import SampleSkipped

    path = Path(path)
    try:
        audio, sr = decode_audio(read_audio_bytes(path, max_bytes), ext=path.suffix.lstrip(".").lower())
    except SampleSkipped as exc:
        raise ValueError(f"cannot read audio {path}: {exc}") from None
    return prepare_waveform(audio, sr).numpy()


def as_waveform(audio: AudioInput, sampling_rate: int | None = None) -> np.ndarray:
    """A path (read with `read_audio`, at the file's own rate) or a raw array at ``sampling_rate`` -> float32
    mono (T,) at 16 kHz. Arrays go through the processor's own conversion (`prepare_waveform`: integer PCM
    scaled to [-1, 1), channels averaged, resampled), so both paths give the same features."""
    if isinstance(audio, (str, os.PathLike)):
        return read_audio(audio)
    from audio_adapter.processing.audio_features import prepare_waveform

    if sampling_rate is None:
        raise ValueError(
            "sampling_rate is required with a raw audio array: pass the clip's rate in Hz (no rate is assumed)"
        )
    return prepare_waveform(audio, sampling_rate).numpy()


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration of an audio file from its header (no decoding)."""
    import soundfile as sf

    return float(sf.info(str(path)).duration)


# ------------------------------------------------------------------------------------------ prompts
def check_cli_text(parser: argparse.ArgumentParser, **texts: str | None) -> None:
    """``parser.error`` (exit 2) when a user text option (``prompt="..."`` -> ``--prompt``) holds a chat-control
    token such as ``<|im_end|>`` or ``<|audio_bos|>``: it would be parsed as structure, not text."""
    from audio_adapter.processing.tokenizer import control_tokens_in

    for name, text in texts.items():
        found = control_tokens_in(text) if text else []
        if found:
            parser.error(
                f"--{name.replace('_', '-')} holds the control token(s) {found}: they would be parsed as chat "
                "structure, not text; remove them (clips and images are placed by --audio / --image)"
            )


def chat_prompt(processor, text: str, n_audio: int = 1, n_images: int = 0, system: str | None = None) -> str:
    """One user turn (images, then audio clips, then ``text``) rendered with the chat template, ready for
    generation. ``system`` replaces the template's default system prompt."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "audio"} for _ in range(n_audio)]
    content.append({"type": "text", "text": text})
    conversation = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": content}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


# ------------------------------------------------------------------------------------------ extension
def add_extension_args(parser: argparse.ArgumentParser) -> None:
    """``--method``, ``--cutoff``, ``--temperature``, ``--base-audio-seconds`` (see `apply_extension_args`)."""
    group = parser.add_argument_group(
        "audio context extension",
        "--method picks a fresh extension (unset options take their defaults); without --method, the given "
        "options modify the checkpoint's saved extension",
    )
    group.add_argument("--method", choices=METHODS, default=None, help="extension method (default: as saved)")
    group.add_argument("--cutoff", type=int, default=None, help="Partial YaRN cutoff index c (partial_yarn only)")
    group.add_argument("--temperature", type=float, default=None, help="attention temperature t (partial_yarn only)")
    group.add_argument(
        "--base-audio-seconds", type=float, default=None, help="audio length the model is familiar with (default 30)"
    )


def extension_from_args(args: argparse.Namespace, current: AudioContextExtension) -> AudioContextExtension:
    """The extension the options ask for. With ``--method``: a new `AudioContextExtension` from the given
    options (others at their defaults, VLAT off). Without: ``current`` with the given options replaced.
    Raises ValueError for invalid combinations (e.g. ``--cutoff`` with ``--method partial_pi``)."""
    given = {
        name: value
        for name, value in (
            ("cutoff", args.cutoff),
            ("temperature", args.temperature),
            ("base_audio_seconds", args.base_audio_seconds),
        )
        if value is not None
    }
    if args.method is not None:
        return AudioContextExtension(method=args.method, **given)
    return replace(current, **given) if given else current


def apply_extension_args(model, args: argparse.Namespace) -> AudioContextExtension:
    """Set the extension the options ask for on ``model`` (validated for its head dim) and return it."""
    extension = extension_from_args(args, model.context_extension)
    model.set_context_extension(extension)
    return extension


def parse_with_extension(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` plus an early check of the extension options (clean CLI error, not a traceback)."""
    args = parser.parse_args(argv)
    if args.method is not None:
        try:
            extension_from_args(args, AudioContextExtension())
        except ValueError as exc:
            parser.error(str(exc))
    return args


def extension_label(extension: AudioContextExtension) -> str:
    """Short human-readable description, e.g. ``partial_yarn(c=8, t=1.2, base=30s)``."""
    if extension.method == "none":
        return "none"
    extra = f"c={extension.cutoff}, t={extension.temperature:g}, " if extension.method == "partial_yarn" else ""
    return f"{extension.method}({extra}base={extension.base_audio_seconds:g}s)"


# Written last into every folder `save_model_folder` writes: the names of the files it wrote. A folder holding it
# and nothing else is an earlier export of this project, the only non-empty folder replaced without --overwrite.
EXPORT_MANIFEST = "audio_adapter_export.json"


def not_an_earlier_export(out: str | os.PathLike) -> str | None:
    """Why ``out`` may not be replaced without ``--overwrite`` (None: it is new, empty, or an earlier export whose
    files are all its own)."""
    import json

    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        written = set(json.loads((out / EXPORT_MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"is not empty and is not an earlier export of this project (no readable {EXPORT_MANIFEST})"
    foreign = sorted(p.name for p in out.iterdir() if p.name not in written | {EXPORT_MANIFEST})
    if foreign:
        return f"holds files an earlier export did not write: {foreign[:5]}{' ...' if len(foreign) > 5 else ''}"
    return None


def check_export_target(out: str | os.PathLike, overwrite: bool = False) -> None:
    """FileExistsError unless ``out`` may be (re)written: new, empty, an earlier export, or ``overwrite``."""
    problem = None if overwrite else not_an_earlier_export(out)
    if problem:
        raise FileExistsError(
            f"--out {out} {problem}: its files would be deleted. Choose a new or empty folder, or pass --overwrite "
            "to replace everything in it"
        )


def save_model_folder(model, processor, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``model`` + ``processor`` as one ``save_pretrained`` folder, written whole
    (`recipes.training.run_files.write_dir_atomically`): a kill leaves the previous folder or none, never a half-written
    one. An existing non-empty ``out`` is replaced only when it is an earlier export (`check_export_target`:
    the files `EXPORT_MANIFEST` lists and nothing else) or with ``overwrite``."""
    import json

    from recipes.training.run_files import write_dir_atomically

    check_export_target(out, overwrite)

    def write(folder: Path) -> None:
        model.save_pretrained(str(folder))
        processor.save_pretrained(folder)
        files = sorted(p.name for p in folder.iterdir())
        (folder / EXPORT_MANIFEST).write_text(json.dumps({"written_by": "audio_adapter", "files": files}, indent=1))

    # checked above (a foreign folder was refused, or the caller asked to overwrite it)
    return write_dir_atomically(out, write, is_ours=lambda folder: True)

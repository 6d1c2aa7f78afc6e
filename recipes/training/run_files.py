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

"""`recipes.common.atomic`: the one file-replacement rule checkpoints, summaries and results share."""

import os
import stat

import pytest

from recipes.common.atomic import atomic_open, atomic_write_text


def test_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_an_exception_keeps_the_previous_file(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(target, "wb") as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_refuses_modes_that_do_not_write_whole_files(tmp_path):
    with pytest.raises(ValueError, match="'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass

"""``scripts.export`` (and every model folder the scripts write) never deletes a folder it did not write: a
non-empty ``--out`` is replaced only when it is an earlier export, or with ``--overwrite`` (issue 23, item 10)."""

from __future__ import annotations

import json

import pytest

from recipes.inference.common import EXPORT_MANIFEST, save_model_folder
from scripts import export


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _other_model_folder(tmp_path):
    """Somebody's model folder: a config.json and weights this project did not write."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    (folder / "model.safetensors").write_bytes(b"their weights")
    return folder


def test_a_folder_of_other_files_is_kept(tiny, tmp_path):
    model, processor = tiny
    theirs = _other_model_folder(tmp_path)
    before = _files(theirs)
    with pytest.raises(FileExistsError, match=r"theirs is not empty and is not an earlier export.*--overwrite"):
        save_model_folder(model, processor, theirs)
    assert _files(theirs) == before
    save_model_folder(model, processor, theirs, overwrite=True)  # asked for: replaced whole
    assert set(_files(theirs)) >= {"config.json", "model.safetensors", EXPORT_MANIFEST}
    assert _files(theirs)["model.safetensors"] != before["model.safetensors"]


def test_an_earlier_export_is_replaced_but_not_with_a_users_file_in_it(tiny, tmp_path):
    model, processor = tiny
    out = tmp_path / "merged"
    out.mkdir()  # an empty folder is fine
    save_model_folder(model, processor, out)
    manifest = json.loads((out / EXPORT_MANIFEST).read_text())
    assert set(manifest["files"]) | {EXPORT_MANIFEST} == set(_files(out))
    save_model_folder(model, processor, out)  # an earlier export: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files an earlier export did not write: \['notes.txt'\]"):
        save_model_folder(model, processor, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_the_export_cli_refuses_before_building_anything(tmp_path):
    theirs = _other_model_folder(tmp_path)
    before = _files(theirs)
    with pytest.raises(FileExistsError, match=r"--out .*theirs is not empty"):
        export.main(["--run", str(tmp_path / "run-not-read-yet"), "--out", str(theirs)])
    assert _files(theirs) == before
    with pytest.raises(FileNotFoundError, match="training_spec.json not found"):  # --overwrite: on to the run
        export.main(["--run", str(tmp_path / "run-not-read-yet"), "--out", str(theirs), "--overwrite"])
    assert _files(theirs) == before

"""A saved audio model folder that lacks (or mis-shapes) its audio weights refuses to load instead of loading
random ones (issue 23, item 3); a complete folder loads as before, through either entry point."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from audio_adapter.families import FAMILIES
from audio_adapter.pretrained.loading import CheckpointMismatchError
from audio_adapter.testing import tiny_model_and_processor


@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    """family -> a folder holding a tiny model of that family, saved whole; do not modify (copy it)."""
    folders = {}
    for family in FAMILIES:
        model, _ = tiny_model_and_processor(seed=3, family=family, projector_type="stack_mlp", projector_stack_factor=2)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        folders[family] = folder
    return folders


def _copy(src, dst, drop: str | None = None, **config_edits):
    """A copy of the folder ``src`` without the weights whose names start with ``drop``, its config edited."""
    shutil.copytree(src, dst)
    if drop is not None:
        file = dst / "model.safetensors"
        state = {k: v for k, v in load_file(str(file)).items() if not k.startswith(drop)}
        save_file(state, str(file), metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_edits}))
    return dst


def test_a_complete_folder_loads_every_weight(saved_folders, family, tmp_path):
    folder = saved_folders[family]
    model_class = FAMILIES[family].model_class
    model, info = model_class.from_pretrained(folder, output_loading_info=True)  # the stock return shape
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    saved = load_file(str(folder / "model.safetensors"))  # audio keys are saved under their own names
    audio = {name: tensor for name, tensor in model.state_dict().items() if name.startswith("audio_")}
    assert len(audio) > 20 and any(name.startswith("audio_projector.") for name in audio)
    for name, tensor in audio.items():
        assert torch.equal(tensor, saved[name]), name
    assert type(AutoModelForImageTextToText.from_pretrained(folder)) is model_class


@pytest.mark.parametrize("drop", ["audio_tower.", "audio_tower.layers.1.", "audio_projector.gate_up.weight"])
def test_missing_audio_weights_refuse_to_load(saved_folders, family, tmp_path, drop):
    folder = _copy(saved_folders[family], tmp_path / "cut", drop=drop)
    for loader in (FAMILIES[family].model_class, AutoModelForImageTextToText):
        with pytest.raises(CheckpointMismatchError, match=rf"audio weights .*missing {drop}"):
            loader.from_pretrained(folder)


def test_an_edited_projector_type_refuses_to_load(saved_folders, family, tmp_path):
    """stack_mlp weights under a config that says linear: other keys (the linear weight missing, the stacking
    projector's unexpected)."""
    folder = _copy(saved_folders[family], tmp_path / "edited", projector_type="linear", projector_stack_factor=1)
    with pytest.raises(CheckpointMismatchError, match=r"missing audio_projector\.weight.*unexpected audio_projector"):
        FAMILIES[family].model_class.from_pretrained(folder)


def test_mismatched_audio_shapes_refuse_to_load_even_when_sizes_may_mismatch(saved_folders, family, tmp_path):
    """Another stack factor: same keys, other shapes. Stock transformers raises by itself; asked to ignore
    mismatched sizes (which re-initialises those weights) it must still refuse for audio weights."""
    folder = _copy(saved_folders[family], tmp_path / "edited", projector_stack_factor=3)
    model_class = FAMILIES[family].model_class
    with pytest.raises(RuntimeError, match="mismatch"):
        model_class.from_pretrained(folder)
    with pytest.raises(CheckpointMismatchError, match=r"audio_projector\.gate_up\.weight of shape"):
        model_class.from_pretrained(folder, ignore_mismatched_sizes=True)

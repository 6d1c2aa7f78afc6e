"""`recipes.training.model_spec.ModelSpec`: one definition of "which model", checked when made, round-tripped through
JSON (training_spec.json), and the projector settings reaching the builders."""

from __future__ import annotations

import json

import pytest

from recipes.training.model_spec import DTYPES, ModelSpec, torch_dtype


def test_round_trip_through_json_and_old_spec_files():
    spec = ModelSpec("tiny", {"hidden_size": 64}, 3, projector_type="stack_mlp", projector_stack_factor=2)
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # a training_spec.json written before the projector fields: other keys ignored, the linear projector
    old = {"format": 1, "stage": 2, "model": "tiny", "tiny_overrides": {}, "tiny_seed": 0, "vlm": None,
           "whisper": None, "audio_pool_stride": 1, "context_extension": None, "dtype": "float32",
           "quantization": None, "init_from": "x", "lora": {"r": 8}}  # fmt: skip
    assert ModelSpec.from_dict(old) == ModelSpec()
    assert ModelSpec.from_dict(old).projector_kwargs() == {}


@pytest.mark.parametrize(
    "name, value",
    [
        ("audio_pool_stride", 0),
        ("tiny_seed", 1.5),
        ("projector_stack_factor", 0),
        ("projector_type", "two words"),
        ("dtype", "fp8"),
        ("quantization", "8bit"),
        ("tiny_overrides", [1, 2]),
    ],
)
def test_bad_settings_are_refused_with_their_name(name, value):
    with pytest.raises(ValueError, match=name) as info:
        ModelSpec(**{name: value})
    assert str(value) in str(info.value) or repr(value) in str(info.value)


def test_dtype_map_is_the_one_of_the_clis():
    import recipes.inference.common as common

    assert common.DTYPES is DTYPES and torch_dtype(None) is None


def test_projector_settings_reach_the_tiny_builder(monkeypatch):
    import audio_adapter.testing

    calls = []

    def fake_tiny(seed=0, **overrides):
        calls.append(overrides)
        raise StopIteration  # nothing to build: only the arguments matter here

    monkeypatch.setattr(audio_adapter.testing, "tiny_model_and_processor", fake_tiny)
    for spec in (
        ModelSpec(tiny_overrides={"hidden_size": 32}),
        ModelSpec(projector_type="stack_mlp", projector_stack_factor=2),
    ):
        with pytest.raises(StopIteration):
            spec.build()
    assert calls == [{"hidden_size": 32}, {"projector_type": "stack_mlp", "projector_stack_factor": 2}]
    with pytest.raises(ValueError, match="projector_type.*contradicts"):
        ModelSpec(tiny_overrides={"projector_type": "linear"}, projector_type="stack_mlp").build()


def test_projector_settings_reach_the_pretrained_loader(monkeypatch):
    import audio_adapter

    seen = {}

    class FakeProcessor:
        tokenizer = "tok"

        @classmethod
        def from_parts(cls, vlm, whisper):
            return cls()

    def fake_load(vlm, whisper, **kwargs):
        seen.update(kwargs, vlm=vlm, whisper=whisper)
        raise StopIteration

    monkeypatch.setattr(audio_adapter, "AudioVLMProcessor", FakeProcessor)
    monkeypatch.setattr(audio_adapter, "load_pretrained_parts", fake_load)
    spec = ModelSpec("pretrained", vlm="v", whisper="w", audio_pool_stride=2, projector_type="stack_mlp",
                     projector_stack_factor=4, dtype="bfloat16")  # fmt: skip
    with pytest.raises(StopIteration):
        spec.build()
    assert seen["projector_type"] == "stack_mlp" and seen["projector_stack_factor"] == 4
    assert seen["audio_pool_stride"] == 2 and seen["dtype"] is DTYPES["bfloat16"] and seen["tokenizer"] == "tok"
    with pytest.raises(ValueError, match="vlm.*whisper"):
        ModelSpec("pretrained", vlm="v").build()


def test_missing_directory_and_prebuilt_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ModelSpec(str(tmp_path)).build()
    with pytest.raises(ValueError, match="prebuilt"):
        ModelSpec("prebuilt").build()


def test_another_base_model_is_named_field_by_field():
    spec = ModelSpec("tiny", tiny_seed=1)
    spec.check_same_base(None)  # a checkpoint from before specs were stored
    spec.check_same_base({k: v for k, v in spec.to_dict().items() if k != "quantization"})  # a field added since
    ModelSpec("prebuilt", tiny_seed=1).check_same_base(spec.to_dict())  # an object passed in: origin unknown
    with pytest.raises(ValueError, match=r"tiny_seed: 0 there, 1 here, vlm: None there, 'Qwen/x' here") as info:
        ModelSpec("tiny", tiny_seed=1, vlm="Qwen/x").check_same_base(ModelSpec().to_dict())
    assert "model.*" in str(info.value)

"""extension.config.AudioContextExtension: validation, derived values, dict round trip."""

from __future__ import annotations

import json

import pytest

from extension import METHODS, AudioContextExtension


def test_defaults_are_vanilla():
    ext = AudioContextExtension()
    assert ext.method == "none" and not ext.is_partial and not ext.is_whole
    assert (ext.base_audio_seconds, ext.cutoff, ext.temperature, ext.vlat) == (30.0, 0, 1.0, False)
    assert METHODS == ("none", "whole_pi", "whole_yarn", "partial_pi", "partial_yarn")


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(method="yarn3"), "yarn3"),
        (dict(method="partial_yarn", cutoff=-1), "cutoff.*-1"),
        (dict(method="partial_yarn", cutoff=2.5), "cutoff"),
        (dict(method="partial_yarn", cutoff=True), "cutoff"),
        (dict(method="partial_yarn", temperature=0.0), "temperature.*0.0"),
        (dict(method="partial_yarn", temperature=float("inf")), "temperature"),
        (dict(base_audio_seconds=0), "base_audio_seconds"),
        (dict(base_audio_seconds=-30.0), "base_audio_seconds"),
        (dict(method="partial_pi", cutoff=3), "cutoff=3"),
        (dict(method="partial_pi", temperature=1.2), "temperature=1.2"),
        (dict(method="whole_yarn", cutoff=8), "whole_yarn"),
        (dict(method="whole_yarn", vlat=True), "vlat"),
        (dict(method="whole_pi", vlat=True), "vlat"),
        (dict(vlat="yes"), "vlat"),
        (dict(vlat=True, vlat_strategy="sparse"), "sparse"),
        (dict(vlat_seed=1.5), "vlat_seed"),
    ],
)
def test_bad_settings_raise_naming_the_value(settings, match):
    with pytest.raises(ValueError, match=match):
        AudioContextExtension(**settings)


@pytest.mark.parametrize("method", ["none", "partial_pi", "partial_yarn"])
def test_vlat_allowed_with_partial_methods_and_none(method):
    ext = AudioContextExtension(method=method, vlat=True, vlat_strategy="limited")
    assert ext.vlat and ext.vlat_strategy == "limited"


def test_effective_values_and_kind():
    partial_pi = AudioContextExtension(method="partial_pi")
    yarn = AudioContextExtension(method="partial_yarn", cutoff=16, temperature=1.3)
    whole = AudioContextExtension(method="whole_yarn")
    assert (partial_pi.effective_cutoff, partial_pi.effective_temperature) == (0, 1.0)
    assert (yarn.effective_cutoff, yarn.effective_temperature) == (16, 1.3)
    assert partial_pi.is_partial and yarn.is_partial and not yarn.is_whole
    assert whole.is_whole and not whole.is_partial


def test_base_audio_tokens():
    assert AudioContextExtension().base_audio_tokens(50) == 1500
    assert AudioContextExtension(base_audio_seconds=120).base_audio_tokens(25.0) == 3000
    assert AudioContextExtension(base_audio_seconds=1.01).base_audio_tokens(50) == 50
    with pytest.raises(ValueError, match="tokens_per_second"):
        AudioContextExtension().base_audio_tokens(0)
    with pytest.raises(ValueError, match="at least 1"):
        AudioContextExtension(base_audio_seconds=0.001).base_audio_tokens(50)


def test_validate_for_head_dim():
    AudioContextExtension(method="partial_yarn", cutoff=64).validate_for_head_dim(128)
    with pytest.raises(ValueError, match="cutoff 65"):
        AudioContextExtension(method="partial_yarn", cutoff=65).validate_for_head_dim(128)
    with pytest.raises(ValueError, match="head_dim"):
        AudioContextExtension().validate_for_head_dim(7)


def test_dict_round_trip_through_json():
    ext = AudioContextExtension(
        method="partial_yarn", base_audio_seconds=120, cutoff=32, temperature=1.2, vlat=True, vlat_seed=4
    )
    d = json.loads(json.dumps(ext.to_dict()))
    assert d["base_audio_seconds"] == 120.0 and isinstance(d["base_audio_seconds"], float)
    assert AudioContextExtension.from_dict(d) == ext
    assert AudioContextExtension.from_dict({}) == AudioContextExtension()


def test_from_dict_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="beta_fast"):
        AudioContextExtension.from_dict({"method": "partial_yarn", "beta_fast": 32})
    with pytest.raises(ValueError, match="temperature"):
        AudioContextExtension.from_dict({"method": "partial_yarn", "temperature": -1})
    with pytest.raises(ValueError, match="dict"):
        AudioContextExtension.from_dict(["method"])

"""Audio config settings are checked whenever they are set: at construction and through ``from_pretrained(dir,
key=value)``, which transformers applies by setattr after the config is built (issue 23, items 9 and 14)."""

from __future__ import annotations

import pytest

from audio_adapter.families import FAMILIES


@pytest.fixture(scope="module")
def saved_configs(tmp_path_factory):
    """A saved default audio config of each family (config.json only: no weights needed to test the settings)."""
    folders = {}
    for name, family in FAMILIES.items():
        folder = tmp_path_factory.mktemp(name)
        family.config_class().save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_real_frames_flag_override_must_be_a_bool(saved_configs, family, value):
    config_class = FAMILIES[family].config_class
    with pytest.raises(ValueError, match=rf"audio_encode_real_frames_only must be a bool.*{value!r}"):
        config_class.from_pretrained(saved_configs[family], audio_encode_real_frames_only=value)


def test_a_bool_override_still_works(saved_configs, family):
    config_class = FAMILIES[family].config_class
    on = config_class.from_pretrained(saved_configs[family], audio_encode_real_frames_only=True)
    assert on.audio_encode_real_frames_only is True
    assert config_class.from_pretrained(saved_configs[family]).audio_encode_real_frames_only is False


@pytest.mark.parametrize("key", ["audio_pool_stride", "projector_stack_factor"])
@pytest.mark.parametrize("value", [1.5, 2.0, "2", 0, -1, True])
def test_integer_settings_must_be_positive_ints(saved_configs, family, key, value):
    config_class = FAMILIES[family].config_class
    with pytest.raises(ValueError, match=rf"{key} must be an int >= 1, got {value!r}"):
        config_class(**{key: value})
    with pytest.raises(ValueError, match=rf"{key} must be an int >= 1, got {value!r}"):
        config_class.from_pretrained(saved_configs[family], **{key: value})


def test_token_ids_must_be_ints(saved_configs, family):
    config_class = FAMILIES[family].config_class
    with pytest.raises(ValueError, match=r"audio_token_id must be a token id .* got '151658'"):
        config_class.from_pretrained(saved_configs[family], audio_token_id="151658")
    assert config_class.from_pretrained(saved_configs[family], audio_pool_stride=2).audio_pool_stride == 2

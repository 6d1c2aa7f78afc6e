"""Issue #13: the VLM-family seam — every private transformers hook the audio mixin relies on exists on each
registered family's stock class, the registry picks classes by model_type, and the old import paths hold."""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch
from torch import nn
from transformers import AutoConfig, LlamaConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

from audio_adapter.families import FAMILIES, family_of
from audio_adapter.model.audio_generation import AudioGenerationMixin
from audio_adapter.model.audio_mixin import PRIVATE_TRANSFORMERS_HOOKS, AudioVLMMixin
from audio_adapter.model.audio_positions import AudioPositionsMixin
from audio_adapter.model.rotary import audio_aware_rotary
from audio_adapter.pretrained.loading import load_pretrained_parts
from audio_adapter.testing import TINY_3S, tiny_model_and_processor

MIXINS = (AudioVLMMixin, AudioGenerationMixin, AudioPositionsMixin)
# methods of the mixins that override public stock API (documented behaviour, not private hooks)
PUBLIC_OVERRIDES = {"__init__", "forward"}


def stock_class(model_class: type) -> type:
    """The stock transformers class a family's audio model class is built over."""
    return next(c for c in model_class.__mro__ if c.__module__.startswith("transformers.models."))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_stock(request):
    """(model_type, stock model class, a tiny stock instance built from the family's tiny audio config)."""
    model, _ = tiny_model_and_processor(family=request.param, **TINY_3S)
    cls = stock_class(FAMILIES[request.param].model_class)
    with torch.random.fork_rng(devices=[]):
        return request.param, cls, cls(model.config).eval()


def _resolve(obj, dotted: str):
    for name in dotted.split("."):
        assert hasattr(obj, name), f"{type(obj).__name__} has no {name!r} (hook {dotted!r})"
        obj = getattr(obj, name)
    return obj


def test_every_private_hook_exists_with_its_parameters(family_stock):
    model_type, cls, stock = family_stock
    for dotted, params in PRIVATE_TRANSFORMERS_HOOKS.items():
        target = _resolve(stock, dotted)
        if params:
            fn = target.forward if isinstance(target, nn.Module) else target
            have = set(inspect.signature(fn).parameters)
            assert set(params) <= have, f"{model_type}: {dotted} lacks parameters {sorted(set(params) - have)}"


def test_mrope_kwargs_are_parameters_of_compute_3d_position_ids(family_stock):
    model_type, cls, stock = family_stock
    have = set(inspect.signature(stock.model.compute_3d_position_ids).parameters)
    wanted = set(FAMILIES[model_type].model_class.mrope_position_kwargs)
    assert wanted <= have, sorted(wanted - have)


def test_hook_list_is_complete(family_stock):
    """Every stock method the mixins override is either listed as a private hook or public API; a new override
    (or a transformers method that starts colliding with a mixin name) must be added to the list."""
    model_type, cls, _ = family_stock
    overrides = {name for mixin in MIXINS for name, v in vars(mixin).items() if callable(v) and hasattr(cls, name)}
    unlisted = overrides - set(PRIVATE_TRANSFORMERS_HOOKS) - PUBLIC_OVERRIDES
    assert not unlisted, f"{model_type}: mixin overrides {sorted(unlisted)} missing from PRIVATE_TRANSFORMERS_HOOKS"


def test_registry_picks_by_model_type():
    family = family_of("qwen2_vl")
    assert family_of(family.config_class.model_type) is family  # a saved audio model's own model_type
    assert issubclass(family.model_class, Qwen2VLForConditionalGeneration)
    with pytest.raises(ValueError, match=r"'llama' is not a supported VLM family.*qwen2_vl"):
        family_of("llama")


def test_load_pretrained_parts_refuses_an_unregistered_family(tmp_path):
    _, processor = tiny_model_and_processor(**TINY_3S)
    LlamaConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'llama' is not a supported VLM family"):
        load_pretrained_parts(str(tmp_path), str(tmp_path), tokenizer=processor.tokenizer)


def test_public_classes():
    from audio_adapter import AudioVLMConfig, AudioVLMForConditionalGeneration
    from audio_adapter.model.audio_mixin import pool_audio_frames
    from audio_adapter.model.rotary import pack_extended_positions

    assert AudioVLMForConditionalGeneration is FAMILIES["qwen2_vl"].model_class
    assert AudioVLMConfig is FAMILIES["qwen2_vl"].config_class
    assert issubclass(AudioVLMForConditionalGeneration, Qwen2VLForConditionalGeneration)
    assert issubclass(AudioVLMConfig, Qwen2VLConfig)
    assert issubclass(audio_aware_rotary(Qwen2VLRotaryEmbedding), Qwen2VLRotaryEmbedding)
    assert callable(pool_audio_frames) and callable(pack_extended_positions)
    assert AutoConfig.for_model(AudioVLMConfig.model_type).__class__ is AudioVLMConfig


def test_model_has_audio_modules_and_audio_aware_rotary_that_pickles():
    model, _ = tiny_model_and_processor(**TINY_3S)
    assert isinstance(model.audio_tower, nn.Module) and isinstance(model.audio_projector, nn.Module)
    rotary = model.model.language_model.rotary_emb
    assert isinstance(rotary, audio_aware_rotary(Qwen2VLRotaryEmbedding)) and isinstance(rotary, Qwen2VLRotaryEmbedding)
    clone = pickle.loads(pickle.dumps(rotary))
    assert type(clone) is type(rotary) and torch.equal(clone.inv_freq, rotary.inv_freq)

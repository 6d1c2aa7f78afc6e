"""Issue: context extension wired into the model — prefill/decode consistency, stock equality, VLAT."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, DynamicCache
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

from audio_adapter.families.qwen2_vl import AudioVLMConfig
from audio_adapter.model.rotary import audio_aware_rotary
from audio_adapter.model.transformers_hooks import cache_kwarg
from audio_adapter.testing import tiny_model_and_processor, tiny_qwen2vl_kwargs
from extension import AudioContextExtension
from tests.helpers import audio_prompt, tone_clip

# base 1 s = 50 tokens, so a 3 s clip (150 tokens) is stretched 3x
METHODS = {
    "none": dict(method="none"),
    "partial_pi": dict(method="partial_pi", base_audio_seconds=1.0),
    "partial_yarn": dict(method="partial_yarn", cutoff=3, temperature=1.3, base_audio_seconds=1.0),
    "whole_pi": dict(method="whole_pi", base_audio_seconds=1.0),
    "whole_yarn": dict(method="whole_yarn", base_audio_seconds=1.0),
}


@pytest.fixture(scope="module")
def model_and_processor(family):
    return tiny_model_and_processor(seed=4, family=family)


@pytest.fixture()
def with_extension(model_and_processor):
    model, _ = model_and_processor

    def apply(settings):
        model.set_context_extension(**settings)

    yield apply
    model.set_context_extension(method="none")


def _prompt_and_continuation(processor, n_new=6):
    inputs = processor(
        text=[audio_prompt(processor, n_clips=2)], audio=[tone_clip(3.0), tone_clip(2.0, 700.0)], sampling_rate=16000
    )
    continuation = processor.tokenizer([" C4 E4 G4 A4 B4 C5"], return_tensors="pt").input_ids[:, :n_new]
    return inputs, continuation


@pytest.mark.parametrize("name", list(METHODS))
def test_full_forward_equals_prefill_plus_cached_decode(model_and_processor, with_extension, name):
    model, processor = model_and_processor
    with_extension(METHODS[name])
    inputs, continuation = _prompt_and_continuation(processor)
    full_ids = torch.cat([inputs["input_ids"], continuation], dim=1)
    full_types = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(continuation, dtype=torch.int32)], dim=1)
    with torch.no_grad():
        full = model(
            input_ids=full_ids,
            attention_mask=torch.ones_like(full_ids),
            mm_token_type_ids=full_types,
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
        ).logits
        cache = DynamicCache(config=model.config)
        prefill = model(**inputs, **cache_kwarg(cache), use_cache=True).logits
        step_logits = []
        for i in range(continuation.shape[1]):
            length = inputs["input_ids"].shape[1] + i + 1
            out = model(
                input_ids=continuation[:, i : i + 1],
                attention_mask=torch.ones(1, length, dtype=torch.long),
                **cache_kwarg(cache),
                use_cache=True,
            )
            step_logits.append(out.logits[:, -1])
    n_prompt = inputs["input_ids"].shape[1]
    assert (full[:, :n_prompt] - prefill).abs().max().item() < 1e-4
    for i, logits in enumerate(step_logits):
        assert (full[:, n_prompt + i] - logits).abs().max().item() < 1e-4, f"decode step {i}"


@pytest.mark.parametrize("name", ["partial_yarn", "whole_yarn"])
def test_generate_matches_no_cache_loop_with_extension(model_and_processor, with_extension, name):
    model, processor = model_and_processor
    with_extension(METHODS[name])
    inputs, _ = _prompt_and_continuation(processor)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        seq = inputs["input_ids"]
        types = inputs["mm_token_type_ids"]
        for _ in range(5):
            logits = model(
                input_ids=seq,
                attention_mask=torch.ones_like(seq),
                mm_token_type_ids=types,
                input_features=inputs["input_features"],
                input_features_mask=inputs["input_features_mask"],
            ).logits[:, -1]
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
            types = torch.cat([types, torch.zeros(1, 1, dtype=torch.int32)], dim=1)
    assert torch.equal(out, seq)


def test_method_none_is_bit_identical_to_stock_positions(model_and_processor):
    model, processor = model_and_processor
    inputs, _ = _prompt_and_continuation(processor)
    assert model.context_extension.method == "none"
    with torch.no_grad():
        ours = model(**inputs).logits
        # stock path: rotary fed the stock (3, B, L) positions computed by Qwen2-VL itself
        rotary = model.model.language_model.rotary_emb
        stock_forward = type(rotary).__mro__[1].forward
        original = type(rotary).forward
        try:
            type(rotary).forward = stock_forward
            ref = model(**inputs).logits
        finally:
            type(rotary).forward = original
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("name", ["partial_pi", "partial_yarn"])
def test_text_only_prompt_unaffected_by_partial_methods(model_and_processor, with_extension, name):
    model, processor = model_and_processor
    inputs = processor(text=["A text-only prompt, long enough to matter.", "short"], padding=True)
    with torch.no_grad():
        ref = model(**inputs).logits
        with_extension(METHODS[name])
        ours = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    assert torch.equal(ours[mask], ref[mask])


def test_partial_method_changes_long_audio_but_not_short(model_and_processor, with_extension):
    model, processor = model_and_processor
    short = processor(text=[audio_prompt(processor)], audio=[tone_clip(0.8)], sampling_rate=16000)  # 40 < 50 tokens
    long = processor(text=[audio_prompt(processor)], audio=[tone_clip(3.0)], sampling_rate=16000)
    with torch.no_grad():
        ref_short, ref_long = model(**short).logits, model(**long).logits
        with_extension(METHODS["partial_pi"])
        ext_short, ext_long = model(**short).logits, model(**long).logits
    assert torch.equal(ext_short, ref_short)
    assert (ext_long - ref_long).abs().max().item() > 1e-4


def test_extension_saved_in_config_and_validated(model_and_processor, with_extension):
    model, _ = model_and_processor
    with_extension(METHODS["partial_yarn"])
    assert model.config.context_extension["method"] == "partial_yarn"
    assert model.config.context_extension["cutoff"] == 3
    with pytest.raises(ValueError, match="cutoff"):
        model.set_context_extension(method="partial_yarn", cutoff=99)  # head_dim 16 -> at most 8
    with pytest.raises(ValueError):
        model.set_context_extension(method="whole_yarn", vlat=True)


def test_vlat_virtual_length_changes_training_forward(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=[audio_prompt(processor)], audio=[tone_clip(1.0)], sampling_rate=16000)
    with torch.no_grad():
        plain = model(**inputs).logits
        same = model(**inputs, virtual_audio_tokens=torch.tensor([50.0])).logits  # virtual == real length
        compressed = model(**inputs, virtual_audio_tokens=torch.tensor([250.0])).logits  # factor 5
    assert torch.allclose(plain, same, atol=1e-5)
    assert (plain - compressed).abs().max().item() > 1e-4


def test_extension_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        AudioContextExtension(method="yarn3")
    with pytest.raises(ValueError, match="temperature"):
        AudioContextExtension(method="partial_yarn", temperature=0.0)


@pytest.mark.parametrize("cutoff,temperature", [(0, 1.0), (3, 1.3), (8, 0.7), (5, 1.0)])
def test_rotary_fast_path_equals_pure_partial_yarn(model_and_processor, with_extension, cutoff, temperature):
    """The model's gather-based rotary equals `extension.partial_yarn.partial_yarn_cos_sin` exactly."""
    from audio_adapter.model.rotary import pack_extended_positions
    from extension.partial_yarn import partial_yarn_cos_sin, stretch_positions

    model, _ = model_and_processor
    with_extension(dict(method="partial_yarn", cutoff=cutoff, temperature=temperature, base_audio_seconds=1.0))
    rotary = model.model.language_model.rotary_emb
    generator = torch.Generator().manual_seed(cutoff)
    audio = torch.zeros(2, 40, dtype=torch.bool)
    audio[0, 5:30] = True
    audio[1, 2:9] = True
    audio[1, 12:38] = True
    raw = torch.arange(40).expand(3, 2, 40) + torch.randint(0, 3, (3, 2, 40), generator=generator)
    stretched = stretch_positions(raw, audio, base_audio_tokens=10)
    text = torch.arange(40).expand(2, 40)
    packed = pack_extended_positions(text, raw, stretched, audio, torch.ones(2))
    cos, sin = rotary(torch.zeros(1), packed)
    ref_cos, ref_sin = partial_yarn_cos_sin(
        rotary.inv_freq, raw, stretched, audio, cutoff, temperature, mrope_section=rotary.mrope_section
    )
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


# ------------------------------------------------------------------ the extension is validated wherever it enters
BAD_EXTENSION = {"method": "partial_yarn", "cutoff": 100, "temperature": 1.2}


def _tiny_config_kwargs() -> dict:
    return tiny_qwen2vl_kwargs(256)  # head_dim 64 / 4 = 16: the rotary head has 8 frequencies


def test_config_refuses_a_cutoff_the_head_cannot_hold():
    with pytest.raises(ValueError, match=r"cutoff 100 exceeds head_dim // 2 = 8 \(head_dim 16\)"):
        AudioVLMConfig(**_tiny_config_kwargs(), context_extension=BAD_EXTENSION)
    ok = AudioVLMConfig(**_tiny_config_kwargs(), context_extension={**BAD_EXTENSION, "cutoff": 8})
    assert ok.get_context_extension().cutoff == 8


def test_from_pretrained_refuses_a_saved_bad_extension(tmp_path):
    AudioVLMConfig(**_tiny_config_kwargs()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "context_extension": BAD_EXTENSION}))
    for loader in (AudioVLMConfig, AutoConfig):
        with pytest.raises(ValueError, match=r"cutoff 100 exceeds .*head_dim 16"):
            loader.from_pretrained(tmp_path)


def test_rotary_refuses_a_cutoff_the_head_cannot_hold():
    text_config = AudioVLMConfig(**_tiny_config_kwargs()).text_config
    with pytest.raises(ValueError, match=r"cutoff 100 exceeds .*head_dim 16"):
        audio_aware_rotary(Qwen2VLRotaryEmbedding)(text_config, AudioContextExtension(**BAD_EXTENSION))

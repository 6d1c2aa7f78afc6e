"""The transformers internals listed in `audio_adapter/model/transformers_hooks.py` exist and behave as the code
assumes, on the installed release; and the project's own modules raise no deprecation or future warning on it.

(`tests/model/test_families.py` checks the per-model hooks, `PRIVATE_TRANSFORMERS_HOOKS`, on every family.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import GenerationConfig, LogitsProcessorList, WhisperConfig, WhisperModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, _compute_yarn_parameters

from audio_adapter.model.transformers_hooks import (
    CACHE_ARGUMENT_BY_RELEASE,
    LOAD_REPORT_TEXT,
    PRIVATE_TRANSFORMERS_INTERNALS,
    STOCK_CACHE_ARGUMENT,
    cache_kwarg,
    installed_release,
    returned_cache,
)
from audio_adapter.pretrained.loading import load_whisper_encoder
from audio_adapter.testing import TINY_3S, tiny_model_and_processor
from extension.whole_context import _YarnConfig
from tests.helpers import single_thread  # noqa: F401 (autouse: tiny models, no OpenMP spinning)
from tests.model.test_stock_parity import ForceTokenAt

OUR_MODULES = r"(audio_adapter|extension|recipes|scripts)(\.|$)"


def test_the_installed_release_is_recorded_with_its_cache_argument():
    release = installed_release()
    assert release in CACHE_ARGUMENT_BY_RELEASE, (
        f"transformers {transformers.__version__} is not a supported release: check the hooks "
        "(bash scripts/check_upstream.sh) and add it to CACHE_ARGUMENT_BY_RELEASE"
    )
    assert CACHE_ARGUMENT_BY_RELEASE[release] == STOCK_CACHE_ARGUMENT


def _resolve_import_path(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if name not in getattr(obj, "__annotations__", {}) or hasattr(obj, name):
                obj = getattr(obj, name)
            else:
                obj = obj.__annotations__[name]  # a declared, instance-only attribute
        return obj
    raise AssertionError(f"cannot import any prefix of {dotted!r}")


@pytest.mark.parametrize("dotted", sorted(PRIVATE_TRANSFORMERS_INTERNALS))
def test_every_listed_internal_exists_with_its_parameters(dotted):
    target = _resolve_import_path(dotted)
    params = PRIVATE_TRANSFORMERS_INTERNALS[dotted]
    if params:
        have = set(inspect.signature(target).parameters)
        assert set(params) <= have, f"{dotted} lacks parameters {sorted(set(params) - have)}"


def test_every_private_transformers_name_the_code_imports_is_listed():
    """A ``from transformers.x import _name`` anywhere in the project's packages is in the tested list."""
    repo = Path(__file__).resolve().parents[2]
    imported = set()
    for package in ("audio_adapter", "extension", "recipes", "scripts"):
        for path in (repo / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "transformers":
                    imported |= {f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")}
    assert "transformers.modeling_rope_utils._compute_yarn_parameters" in imported
    assert imported <= set(PRIVATE_TRANSFORMERS_INTERNALS), sorted(imported - set(PRIVATE_TRANSFORMERS_INTERNALS))


def test_yarn_from_the_stand_in_config_equals_yarn_from_a_real_config():
    """`extension.whole_context` feeds `_compute_yarn_parameters` a stand-in config with a handful of
    attributes: it must give what the stock rotary gets from a real model config."""
    real = transformers.Qwen2Config(hidden_size=128, num_attention_heads=2, max_position_embeddings=4096)
    real.rope_parameters = {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 4.0,
        "original_max_position_embeddings": 1024,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    stand_in = _YarnConfig(1e6, 64, 4.0, 1024, 32.0, 1.0)
    want_freq, want_scale = ROPE_INIT_FUNCTIONS["yarn"](real, None)
    got_freq, got_scale = _compute_yarn_parameters(stand_in)
    torch.testing.assert_close(got_freq, want_freq, rtol=0, atol=0)
    assert got_scale == pytest.approx(want_scale)


def test_generate_records_the_mask_length_our_prefill_reads(monkeypatch):
    """`_prefill` falls back on ``generation_config._mask_length`` when no attention mask is given."""
    model, processor = tiny_model_and_processor(**TINY_3S)
    seen = []
    stock_prefill = type(model).__mro__[1]._prefill

    def spy(self, input_ids, generation_config, model_kwargs, is_first_iteration=True):
        seen.append(getattr(generation_config, "_mask_length", None))
        return stock_prefill(self, input_ids, generation_config, model_kwargs, is_first_iteration)

    monkeypatch.setattr(type(model).__mro__[1], "_prefill", spy)
    inputs = processor(text=["Hello there, friend"])
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert seen == [inputs["input_ids"].shape[1]]
    assert "_mask_length" in GenerationConfig.__annotations__


def test_the_load_report_our_filter_hides_is_still_logged_by_transformers(tmp_path):
    """loading.py drops transformers' key tables by their text; if the text changed, the filter would hide nothing
    and users would see expected keys as errors again."""
    config = WhisperConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=16, decoder_ffn_dim=16, num_mel_bins=8, max_source_positions=10, vocab_size=60,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    WhisperModel(config).save_pretrained(tmp_path)  # keys have no "model." prefix: the encoder loads nothing
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        with pytest.raises(ValueError, match="does not match WhisperEncoder"):
            load_whisper_encoder(str(tmp_path))
        assert not any(LOAD_REPORT_TEXT in str(r.msg) for r in records), "our filter let the table through"
        transformers.WhisperForAudioClassification.from_pretrained(tmp_path)  # classifier missing: a report
    finally:
        logger.removeHandler(handler)
    assert any(LOAD_REPORT_TEXT in str(r.msg) for r in records)


def _audio_prompt(processor):
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Hi"}]}], add_generation_prompt=True
    )
    clip = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("float32")
    return processor(text=[prompt], audio=[clip], sampling_rate=16000, return_tensors="pt")


def _generation_paths(model, processor):
    """Every generation path users take: audio prompt (cached / uncached, a generated <|AUDIO|>), continuing
    a returned cache, a context extension."""
    inputs = _audio_prompt(processor)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    force = LogitsProcessorList([ForceTokenAt(audio_id, {1}, inputs["input_ids"].shape[1])])
    greedy = {"max_new_tokens": 3, "do_sample": False, "logits_processor": force}
    cached = model.generate(**inputs, **greedy)
    uncached = model.generate(**inputs, use_cache=False, **greedy)
    first = model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    mask = torch.ones_like(first.sequences)
    model.generate(
        input_ids=first.sequences, attention_mask=mask, max_new_tokens=2, **cache_kwarg(returned_cache(first))
    )
    model.set_context_extension(method="partial_yarn", cutoff=2, temperature=1.2, base_audio_seconds=0.5)
    try:
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    finally:
        model.set_context_extension(method="none")
    return cached, uncached


def test_our_modules_raise_no_deprecation_or_future_warning(caplog):
    model, processor = tiny_model_and_processor(**TINY_3S)
    with warnings.catch_warnings(), torch.no_grad():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("error", category=category, module=OUR_MODULES)
        with caplog.at_level(logging.WARNING, logger="transformers"):
            cached, uncached = _generation_paths(model, processor)
    deprecations = [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]
    assert not deprecations, deprecations
    # a generated <|AUDIO|> is a text token with and without a cache
    assert torch.equal(cached, uncached)

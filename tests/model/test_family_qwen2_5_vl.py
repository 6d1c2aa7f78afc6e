"""What is specific to the Qwen2.5-VL family (`audio_adapter/families/qwen2_5_vl.py`); the behavioural tests it
shares with Qwen2-VL run through the ``family`` fixture (tests/conftest.py).

The audio path is the family-independent mixin: given Qwen2-VL's text and audio weights, the Qwen2.5-VL audio model
must compute exactly what the Qwen2-VL one does on audio prompts (its vision tower is the only other difference).
Its one family-specific line, ``second_per_grid_ts`` among the M-RoPE inputs, must reach the stock positions when
a context extension builds them (videos are spaced by their duration in Qwen2.5-VL)."""

from __future__ import annotations

import pytest
import torch

from audio_adapter.testing import TINY_3S, tiny_model_and_processor
from tests.helpers import audio_prompt, tone_clip

PARTIAL_YARN = {"method": "partial_yarn", "cutoff": 2, "temperature": 1.3, "base_audio_seconds": 1.0}


@pytest.fixture(scope="module")
def twins():
    """(Qwen2-VL audio model, Qwen2.5-VL audio model with the same text + audio weights, processor)."""
    qwen2, processor = tiny_model_and_processor(seed=0, family="qwen2_vl", **TINY_3S)
    qwen2_5, _ = tiny_model_and_processor(seed=0, family="qwen2_5_vl", **TINY_3S)
    shared = {k: v for k, v in qwen2.state_dict().items() if not k.startswith("model.visual.")}
    missing, unexpected = qwen2_5.load_state_dict(shared, strict=False)
    assert not unexpected and missing and all(k.startswith("model.visual.") for k in missing)
    return qwen2, qwen2_5, processor


@pytest.mark.parametrize("extension", [None, PARTIAL_YARN], ids=["none", "partial_yarn"])
def test_audio_path_equals_qwen2_vls_given_its_weights(twins, extension):
    qwen2, qwen2_5, processor = twins
    prompts = [audio_prompt(processor), audio_prompt(processor, "Again?", n_clips=2)]
    inputs = processor(
        text=prompts, audio=[tone_clip(2.5), tone_clip(0.7, 300.0), tone_clip(1.2, 500.0)], sampling_rate=16000
    )
    try:
        for model in (qwen2, qwen2_5):
            model.set_context_extension(**(extension or {"method": "none"}))
        with torch.no_grad():
            assert torch.equal(qwen2(**inputs).logits, qwen2_5(**inputs).logits)
            out = [m.generate(**inputs, max_new_tokens=5, num_beams=2, do_sample=False) for m in (qwen2, qwen2_5)]
        assert torch.equal(out[0], out[1])
    finally:
        for model in (qwen2, qwen2_5):
            model.set_context_extension(method="none")


def _video_inputs(model, processor, seconds_per_grid: float) -> dict:
    """A prompt with one 2 x 4 x 4-patch video (8 merged tokens) and random pixels, built without the processor
    (which takes no videos): the stock layout of ``pixel_values_videos`` / ``video_grid_thw`` / token types."""
    cfg, tok = model.config, processor.tokenizer
    grid = torch.tensor([[2, 4, 4]])
    text = tok("Describe the clip:", return_tensors="pt").input_ids[0]
    video = torch.tensor([cfg.vision_start_token_id] + [cfg.video_token_id] * 8 + [cfg.vision_end_token_id])
    input_ids = torch.cat([text, video, text])[None]
    mm_token_type_ids = (input_ids == cfg.video_token_id).int() * 2
    patch = 3 * cfg.vision_config.temporal_patch_size * cfg.vision_config.patch_size**2
    pixels = torch.randn(int(grid.prod()), patch, generator=torch.Generator().manual_seed(0))
    return dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values_videos=pixels,
        video_grid_thw=grid,
        mm_token_type_ids=mm_token_type_ids,
        second_per_grid_ts=torch.tensor([seconds_per_grid]),
    )


def test_second_per_grid_ts_reaches_positions_built_for_an_extension():
    model, processor = tiny_model_and_processor(seed=3, family="qwen2_5_vl", **TINY_3S)
    slow, fast = _video_inputs(model, processor, 2.0), _video_inputs(model, processor, 0.5)
    try:
        with torch.no_grad():
            stock_slow, stock_fast = model(**slow).logits, model(**fast).logits  # no extension: stock positions
            model.set_context_extension(**PARTIAL_YARN)  # no audio: extended positions must equal the stock ones
            ext_slow, ext_fast = model(**slow).logits, model(**fast).logits
    finally:
        model.set_context_extension(method="none")
    assert not torch.allclose(stock_slow, stock_fast)  # the frame duration moves the video's temporal positions
    assert torch.allclose(ext_slow, stock_slow, atol=1e-5) and torch.allclose(ext_fast, stock_fast, atol=1e-5)


def test_default_audio_token_ids_follow_qwen2_5s_tokenizer():
    """A bare config's audio ids are where `add_audio_tokens` puts them in the real Qwen2.5-VL tokenizer (after its
    22 added tokens; Qwen2-VL's 151657.. are ``<tool_call>`` there), still inside the 152,064 embedding rows."""
    from audio_adapter.families.qwen2_5_vl import AudioQwen2_5_VLConfig

    config = AudioQwen2_5_VLConfig()
    ids = [config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id]
    assert ids == [151665, 151666, 151667] and max(ids) < config.text_config.vocab_size == 152064

"""Issue #15: encode only the mel frames of real audio (opt-in `audio_encode_real_frames_only`)."""

from __future__ import annotations

import pytest
import torch

from audio_adapter import AudioVLMConfig, AudioVLMForConditionalGeneration
from audio_adapter.encoders.audio_lengths import audio_token_count
from audio_adapter.encoders.real_frames import real_mel_frames, whisper_encoder_forward
from audio_adapter.model.transformers_hooks import STOCK_CACHE_ARGUMENT, cache_kwarg, returned_cache
from audio_adapter.testing import tiny_model_and_processor
from tests.helpers import audio_prompt, tone_clip


@pytest.fixture(scope="module")
def real_model():
    """Tiny model with the option on (module-private: tests below do not mutate it)."""
    model, processor = tiny_model_and_processor(seed=0)
    model.config.audio_encode_real_frames_only = True
    return model, processor


def inputs_for(processor, seconds: list[float]) -> dict:
    clips = [tone_clip(s, 300.0 + 50 * i, seed=i) for i, s in enumerate(seconds)]
    return processor(text=[audio_prompt(processor, n_clips=len(clips))], audio=clips, sampling_rate=16000)


def test_full_window_equals_stock_encoder_forward(tiny):
    """The submodule path reproduces `WhisperEncoder.forward` exactly on a full window (guards its order)."""
    model, processor = tiny
    feats = inputs_for(processor, [3.0])["input_features"]
    with torch.no_grad():
        stock = model.audio_tower(feats).last_hidden_state
        ours = whisper_encoder_forward(model.audio_tower, feats)
    torch.testing.assert_close(ours, stock, rtol=0, atol=0)


@pytest.mark.parametrize("pool_stride", [1, 2, 3])
def test_trimmed_lengths_cover_the_tokens(pool_stride):
    mel = torch.tensor([1, 2, 3, 99, 100, 101, 500, 2999, 3000])
    trimmed = real_mel_frames(mel, pool_stride, 3000)
    assert (trimmed % 2 == 0).all() and (trimmed <= 3000).all() and (trimmed >= mel).all()
    encoded = trimmed // 2
    tokens = -(-((mel - 1) // 2 + 1) // pool_stride)
    # pooling the encoded frames yields exactly the window's tokens (whole groups, or the full window)
    assert ((encoded == pool_stride * tokens) | (trimmed == 3000)).all()
    assert (-(-encoded // pool_stride) == tokens).all()


@pytest.mark.parametrize("pool_stride", [1, 2])
def test_token_counts_match_placeholders(pool_stride):
    model, processor = tiny_model_and_processor(seed=0, audio_pool_stride=pool_stride)
    model.config.audio_encode_real_frames_only = True
    seconds = [1.0, 5.01, 31.0]  # a 31 s clip spans a full window and a 1 s one
    inputs = inputs_for(processor, seconds)
    with torch.no_grad():
        embeds = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    expected = sum(audio_token_count(int(s * 16000), frames_per_token=pool_stride) for s in seconds)
    assert embeds.shape == (expected, model.config.text_config.hidden_size)
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == expected


def test_window_result_does_not_depend_on_its_batch(real_model):
    model, processor = real_model
    alone = inputs_for(processor, [4.0])
    batch = inputs_for(processor, [4.0, 12.0, 7.5])
    with torch.no_grad():
        a = model.get_audio_features(alone["input_features"], alone["input_features_mask"])
        b = model.get_audio_features(batch["input_features"], batch["input_features_mask"])
    torch.testing.assert_close(b[: a.shape[0]], a, rtol=0, atol=1e-6)


def test_outputs_differ_from_padded_except_full_windows(tiny, real_model):
    padded_model, processor = tiny
    model, _ = real_model
    inputs = inputs_for(processor, [5.0, 30.0])
    with torch.no_grad():
        padded = padded_model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
        real = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    short = 250  # 5 s -> 250 tokens, then the full 30 s window
    change = ((real[:short] - padded[:short]).norm() / padded[:short].norm()).item()
    assert 1e-3 < change < 1.0, change  # not identical (no padding to attend to), but the same order of magnitude
    torch.testing.assert_close(real[short:], padded[short:], rtol=0, atol=0)  # nothing trimmed: identical


def test_generation_equals_training_forward(real_model):
    """Greedy generate (audio encoded once, KV cache) and one full forward with input_features agree."""
    model, processor = real_model
    inputs = inputs_for(processor, [2.5, 6.0])
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=5,
            min_new_tokens=5,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        full = model(
            input_ids=out.sequences,
            attention_mask=torch.ones_like(out.sequences),
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
        )
    prompt = inputs["input_ids"].shape[1]
    step_logits = torch.stack(out.logits, dim=1)[0]
    torch.testing.assert_close(full.logits[0, prompt - 1 : -1], step_logits, rtol=1e-4, atol=1e-4)


def test_save_load_keeps_the_flag(real_model, tmp_path):
    model, processor = real_model
    model.save_pretrained(tmp_path)
    loaded = AudioVLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.audio_encode_real_frames_only is True
    assert AudioVLMConfig.from_pretrained(tmp_path).audio_encode_real_frames_only is True
    inputs = inputs_for(processor, [3.0])
    with torch.no_grad():
        a = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
        b = loaded.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_extract_features_follows_the_option(real_model):
    from scripts.extract_features import extract_clip

    model, processor = real_model
    inputs = inputs_for(processor, [3.0])
    saved = extract_clip(model, processor, tone_clip(3.0, 300.0, seed=0), layers=[0])  # the clip of inputs_for
    with torch.no_grad():
        embeds = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
        states = model.encode_audio_windows(inputs["input_features"], inputs["input_features_mask"])
    assert saved["encoder_states"].shape == (150, model.config.audio_config.d_model)
    torch.testing.assert_close(saved["encoder_states"], states[0, :150], rtol=0, atol=1e-6)
    torch.testing.assert_close(saved["audio_embeds"], embeds, rtol=0, atol=1e-6)


def test_bad_flag_value_is_refused():
    with pytest.raises(ValueError, match="audio_encode_real_frames_only"):
        AudioVLMConfig(audio_encode_real_frames_only="yes")


def test_generate_continuing_a_cache_keeps_partial_yarn():
    """generate(cache=...) on a prompt whose audio is cached: Qwen2-VL hands back one row of positions
    there; the continuation must still get extended positions (it used to get 3 mixed-up rows, silently)."""
    model, processor = tiny_model_and_processor(
        seed=0, context_extension=dict(method="partial_yarn", cutoff=2, temperature=1.3, base_audio_seconds=1.0)
    )
    inputs = inputs_for(processor, [3.0])
    with torch.no_grad():
        once = model.generate(
            **inputs,
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        first = model.generate(
            **inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_dict_in_generate=True
        )
        positions = model._prepare_position_ids_for_generation(
            first.sequences,
            {
                "input_ids": first.sequences,
                "attention_mask": torch.ones_like(first.sequences),
                STOCK_CACHE_ARGUMENT: returned_cache(first),
            },
        )
        assert positions.shape[0] == 9
        rest = model.generate(
            input_ids=first.sequences,
            attention_mask=torch.ones_like(first.sequences),
            **cache_kwarg(returned_cache(first)),
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    torch.testing.assert_close(torch.stack(rest.logits), torch.stack(once.logits[3:]), rtol=1e-4, atol=1e-4)

"""The frozen-encoder output cache (`audio_adapter.encoders.output_cache`): same features, encoder run once."""

from __future__ import annotations

import pytest
import torch

from audio_adapter.encoders.output_cache import cache_encoder_outputs, encoder_identity
from audio_adapter.testing import tiny_model_and_processor
from tests.helpers import audio_prompt, tone_clip


def clips_inputs(processor, seconds: list[float], seed: int = 0) -> dict:
    clips = [tone_clip(s, 300.0 + 70 * i, seed=seed + i) for i, s in enumerate(seconds)]
    return processor(text=[audio_prompt(processor, n_clips=len(clips))], audio=clips, sampling_rate=16000)


def frozen(seed: int = 0, **overrides):
    """A tiny (model, processor) with its audio tower frozen, as training leaves it."""
    model, processor = tiny_model_and_processor(seed=seed, **overrides)
    model.audio_tower.requires_grad_(False)
    return model, processor


def counting_tower(model) -> list[int]:
    """Windows the audio tower is asked to encode, call by call."""
    calls: list[int] = []
    model.audio_tower.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("real_frames_only", [False, True])
@pytest.mark.parametrize("pool_stride", [1, 3])
def test_cached_features_equal_uncached_and_skip_the_encoder(real_frames_only, pool_stride):
    plain, processor = frozen(audio_pool_stride=pool_stride)
    cached, _ = frozen(audio_pool_stride=pool_stride)
    for m in (plain, cached):
        m.config.audio_encode_real_frames_only = real_frames_only
    store = cache_encoder_outputs(cached)
    store.clear()  # the store is per process and per encoder: other tests may have filled it
    calls = counting_tower(cached) if not real_frames_only else None
    first = clips_inputs(processor, [1.3, 2.7])
    again = clips_inputs(processor, [0.6, 2.7], seed=1)  # other clips
    with torch.no_grad():
        for inputs in (first, again, first):
            feats, mask = inputs["input_features"], inputs["input_features_mask"]
            want = plain.get_audio_features(feats, mask)
            got = cached.get_audio_features(feats, mask)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(store) == 4  # two windows of each call that was new
    if calls is not None:
        assert calls == [2, 2]  # the third call (a repeat) never reached the encoder


def test_a_repeated_window_in_a_new_batch_is_not_encoded_again():
    model, processor = frozen()
    cache_encoder_outputs(model).clear()
    calls = counting_tower(model)
    a, b = clips_inputs(processor, [1.0]), clips_inputs(processor, [1.0, 2.0])  # b's first window is a's
    with torch.no_grad():
        model.get_audio_features(a["input_features"], a["input_features_mask"])
        model.get_audio_features(b["input_features"], b["input_features_mask"])
    assert calls == [1, 1]


def test_models_with_other_weights_or_mode_do_not_share_a_store():
    (a, _), (b, _), (c, _), (same, _) = frozen(0), frozen(1), frozen(0), frozen(0)
    c.config.audio_encode_real_frames_only = True
    assert len({encoder_identity(m) for m in (a, b, c)}) == 3
    assert cache_encoder_outputs(a) is cache_encoder_outputs(same)
    assert cache_encoder_outputs(a) is not cache_encoder_outputs(b)


def test_wrapping_twice_keeps_one_layer():
    model, _ = frozen()
    store = cache_encoder_outputs(model)
    wrapped = model.encode_audio_windows
    assert cache_encoder_outputs(model) is store and model.encode_audio_windows is wrapped


def test_a_trainable_encoder_is_refused_by_name():
    model, _ = tiny_model_and_processor(seed=0)
    model.audio_tower.requires_grad_(True)
    with pytest.raises(ValueError, match=r"frozen encoder.*audio_tower\.conv1\.weight"):
        cache_encoder_outputs(model)


def test_a_training_run_with_encoder_cache_encodes_each_clip_once(tmp_path):
    """The module's ``encoder_cache`` (YAML ``model.encoder_cache: true``): two epochs of stage 1 over 8 clips ask
    the encoder for 8 windows in all, and the second epoch for none."""
    from audio_adapter.testing import TINY_3S
    from recipes.training.module import AudioVLMLightningModule
    from tests.helpers import datamodule, make_shards, trainer

    shards = make_shards(tmp_path / "data", num=8, seed=4, maxcount=4)
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2, encoder_cache=True)
    module.audio_vlm.encode_audio_windows._encoder_output_cache.clear()  # per process: earlier tests' windows
    calls = counting_tower(module.audio_vlm)
    trainer(8).fit(module, datamodule(shards["glob"], batch_size=2, num_workers=0))
    assert sum(calls) == 8 and module.trainer.global_step == 8

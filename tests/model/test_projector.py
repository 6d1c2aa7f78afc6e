"""Issue #13: the projector is a named module built from config — "linear" (the paper's) or "stack_mlp"
(Ultravox-style frame stacking + RMSNorm + SwiGLU); switching is one config field."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from audio_adapter.encoders.audio_lengths import audio_token_count
from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.families.qwen2_vl import AudioVLMConfig
from audio_adapter.model.projector import (
    LinearAudioProjector,
    StackMLPAudioProjector,
    check_projector_settings,
    select_tokens,
    stack_frames,
)
from audio_adapter.testing import TINY_3S, tiny_model_and_processor
from tests.helpers import (
    audio_prompt,
    single_thread,  # noqa: F401 (autouse: tiny models, no OpenMP spinning)
    tone_clip,
)

STACK = {"projector_type": "stack_mlp", "projector_stack_factor": 4}


@pytest.fixture(scope="module")
def stacked():
    return tiny_model_and_processor(seed=0, **TINY_3S, **STACK)


def _batch(processor, seconds=(4.0,), n_prompts=1):
    clips = [tone_clip(s, 300.0 + 100 * i, seed=i) for i, s in enumerate(seconds)]
    prompts = [audio_prompt(processor, n_clips=len(seconds) // n_prompts)] * n_prompts
    return processor(text=prompts, audio=clips, sampling_rate=SAMPLING_RATE, padding=True)


def test_stack_frames_closed_form():
    frames = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    stacked = stack_frames(frames, 2)
    assert stacked.shape == (2, 3, 6)
    assert torch.equal(stacked[0, 0], torch.cat([frames[0, 0], frames[0, 1]]))
    assert torch.equal(stacked[1, 2], torch.cat([frames[1, 4], torch.zeros(3)]))  # zero-padded tail
    assert torch.equal(select_tokens(stacked, torch.tensor([1, 3])), torch.cat([stacked[0, :1], stacked[1, :3]]))


@pytest.mark.parametrize(
    "stride, stack, seconds, tokens",
    [(1, 4, 4.0, 50), (2, 2, 4.0, 50), (1, 1, 4.0, 200), (1, 3, 1.0, 17)],  # ceil(50 * s / (stride * stack))
)
def test_frames_per_token_is_stride_times_stack(stride, stack, seconds, tokens):
    projector = {"projector_type": "stack_mlp" if stack > 1 else "linear", "projector_stack_factor": stack}
    config = AudioVLMConfig(audio_pool_stride=stride, **projector)
    assert config.audio_frames_per_token == stride * stack
    assert config.audio_tokens_per_second == 50 / (stride * stack)
    assert audio_token_count(int(seconds * SAMPLING_RATE), frames_per_token=config.audio_frames_per_token) == tokens


def test_stack_mlp_model_tokens_match_processor_placeholders():
    """Real 30 s windows: a 4 s clip at stride 1, stack 4 is 50 tokens, in the processor and in the model."""
    model, processor = tiny_model_and_processor(seed=0, **STACK)
    batch = _batch(processor, seconds=(4.0,))
    assert int((batch["input_ids"] == model.config.audio_token_id).sum()) == 50
    with torch.no_grad():
        embeds = model.get_audio_features(batch["input_features"], batch["input_features_mask"])
    assert embeds.shape == (50, model.config.text_config.hidden_size)


def test_linear_key_unchanged_and_stack_mlp_keys(stacked):
    linear, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    keys = sorted(k for k in linear.state_dict() if k.startswith("audio_projector."))
    assert keys == ["audio_projector.weight"] and isinstance(linear.audio_projector, LinearAudioProjector)
    assert linear.audio_projector.weight.shape == (64, 64) and linear.audio_projector.bias is None
    model, _ = stacked
    keys = sorted(k for k in model.state_dict() if k.startswith("audio_projector."))
    assert keys == ["audio_projector.down.weight", "audio_projector.gate_up.weight", "audio_projector.norm.weight"]
    assert isinstance(model.audio_projector, StackMLPAudioProjector)
    assert model.audio_projector.gate_up.weight.shape == (2 * 64, 4 * 64)
    assert torch.equal(model.audio_projector.norm.weight, torch.ones(4 * 64))  # the projector's own init
    assert abs(model.audio_projector.down.weight.std().item() - 0.02) < 0.004  # initializer_range


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"projector_type": "linear", "projector_stack_factor": 2}, "projector_stack_factor 2 needs"),
        ({"projector_type": "conv"}, "projector_type must be one of .* got 'conv'"),
        ({"projector_type": "stack_mlp", "projector_stack_factor": 0}, "projector_stack_factor must be .* got 0"),
        ({"projector_type": "stack_mlp", "projector_stack_factor": 2.0}, "got 2.0"),
    ],
)
def test_bad_projector_settings_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        AudioVLMConfig(**settings)
    with pytest.raises(ValueError, match=match):
        check_projector_settings(settings["projector_type"], settings.get("projector_stack_factor", 1))


def test_stack_mlp_save_load_equal_logits(stacked, tmp_path):
    model, processor = stacked
    batch = _batch(processor, seconds=(4.0,))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert loaded.config.projector_type == "stack_mlp" and loaded.config.projector_stack_factor == 4
    with torch.no_grad():
        ours, theirs = model(**batch).logits, loaded(**batch).logits
    assert torch.equal(ours, theirs)


def test_stack_mlp_generate_batched_equals_solo(stacked):
    model, processor = stacked
    clips = [tone_clip(4.0, 300.0, seed=1), tone_clip(1.3, 500.0, seed=2)]
    prompts = [audio_prompt(processor), audio_prompt(processor, "Again?")]
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with torch.no_grad():
        together = model.generate(
            **processor(text=prompts, audio=clips, sampling_rate=SAMPLING_RATE, padding=True), **kwargs
        )
        alone = [
            model.generate(**processor(text=[p], audio=[c], sampling_rate=SAMPLING_RATE), **kwargs)
            for p, c in zip(prompts, clips)
        ]
    for row, solo in zip(together, alone):
        assert torch.equal(row[-4:], solo[0, -4:])


def test_real_frames_only_counts_hold_with_stacking():
    """Encoding only real mel frames gives the same tokens per window as the padded windows under stacking."""
    model, processor = tiny_model_and_processor(seed=0, **TINY_3S, **STACK)
    batch = _batch(processor, seconds=(4.0,))  # windows of 3 s and 1 s: 38 + 13 tokens
    with torch.no_grad():
        padded = model.get_audio_features(batch["input_features"], batch["input_features_mask"])
        model.config.audio_encode_real_frames_only = True
        real = model.get_audio_features(batch["input_features"], batch["input_features_mask"])
    assert padded.shape == real.shape == (38 + 13, 64)
    assert torch.allclose(padded[:38], real[:38], atol=1e-5)  # the full first window is the same either way


@pytest.mark.parametrize("projector", [{}, STACK])
def test_short_training_lowers_loss(projector):
    model, processor = tiny_model_and_processor(seed=0, **TINY_3S, **projector)
    batch = _batch(processor, seconds=(2.0,))
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.audio_token_id, -100)
    model.requires_grad_(False).audio_projector.requires_grad_(True)
    model.train()
    optimizer = torch.optim.Adam(model.audio_projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_stack_mlp_model_without_audio_is_stock_and_keeps_ddp_gradients(stacked):
    """Audio absent: logits equal stock Qwen2-VL's; in training every trainable projector parameter still gets a
    (zero) gradient (`_zero_audio_contribution` works for any projector, not just a ``.weight``)."""
    from tests.model.test_model import stock_twin

    model, processor = stacked
    inputs = processor(text=["Hello world, how are you?", "Hi"], padding=True)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, stock_twin(model)(**inputs).logits)
    trainable = [p.requires_grad for p in model.audio_projector.parameters()]
    model.train()
    model.audio_projector.requires_grad_(True)
    try:
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads = [p.grad for p in model.audio_projector.parameters()]
        assert len(grads) == 3 and all(g is not None and not g.any() for g in grads)
    finally:
        model.eval().zero_grad(set_to_none=True)
        for p, flag in zip(model.audio_projector.parameters(), trainable):
            p.requires_grad_(flag)

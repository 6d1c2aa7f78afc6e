"""Issue: audio-capable Qwen2-VL — stock equivalence, audio splicing, encoder/projector, token counts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel, WhisperModel

from audio_adapter.testing import tiny_family_kwargs, tiny_model_and_processor
from tests.helpers import audio_prompt, tone_clip


def stock_twin(model) -> PreTrainedModel:
    """A stock model of our model's VLM family (Qwen2-VL, Qwen2.5-VL, ...) with the same geometry and the same
    weights (minus audio modules)."""
    cfg = model.config
    stock_class = next(c for c in type(model).__mro__ if c.__module__.startswith("transformers.models."))
    stock_config_class = stock_class.config_class
    stock_cfg = stock_config_class(
        **tiny_family_kwargs(cfg.text_config.vocab_size, family=stock_config_class.model_type),
        image_token_id=cfg.image_token_id,
        video_token_id=cfg.video_token_id,
        vision_start_token_id=cfg.vision_start_token_id,
        vision_end_token_id=cfg.vision_end_token_id,
    )
    stock = stock_class(stock_cfg).eval()
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(("audio_tower.", "audio_projector."))}
    stock.load_state_dict(ours, strict=True)  # raises on any missing or unexpected key
    return stock


def test_text_only_logits_equal_stock(tiny_family):
    model, processor = tiny_family
    stock = stock_twin(model)
    inputs = processor(text=["Hello world, how are you?", "Hi"], padding=True)
    with torch.no_grad():
        ours = model(**inputs).logits
        ref = stock(**inputs).logits
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-5


def test_text_and_image_logits_equal_stock(tiny_family):
    model, processor = tiny_family
    stock = stock_twin(model)
    rng = np.random.default_rng(0)
    image = (rng.random((70, 90, 3)) * 255).astype("uint8")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], images=[image])
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) > 1
    with torch.no_grad():
        ours = model(**inputs).logits
        ref = stock(**inputs).logits
    assert (ours - ref).abs().max().item() <= 1e-5


def test_audio_changes_text_logits(tiny_family):
    model, processor = tiny_family
    prompt = audio_prompt(processor)
    a = processor(text=[prompt], audio=[tone_clip(2.0, 300.0)], sampling_rate=16000)
    b = processor(text=[prompt], audio=[tone_clip(2.0, 1200.0, seed=1)], sampling_rate=16000)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        la, lb = model(**a).logits, model(**b).logits
    text_positions = a["input_ids"][0] != model.config.audio_token_id
    after_audio = torch.nonzero(~text_positions)[-1].item() + 1
    diff = (la[0, after_audio:] - lb[0, after_audio:]).abs().max().item()
    assert diff > 1e-4


def test_audio_mixed_with_image_in_one_prompt(tiny_family):
    model, processor = tiny_family
    image = (np.random.default_rng(1).random((60, 60, 3)) * 255).astype("uint8")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "Both?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], images=[image], audio=[tone_clip(1.0)], sampling_rate=16000)
    # audio tokens count as text for M-RoPE (type 0); images are type 1
    assert int(inputs["mm_token_type_ids"][inputs["input_ids"] == model.config.audio_token_id].max()) == 0
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.logits).all()


def test_encoder_matches_whisper_encoder_and_is_frozen(tiny_family):
    model, processor = tiny_family
    whisper = WhisperModel(model.config.audio_config).eval()
    whisper.encoder.load_state_dict(model.audio_tower.state_dict())
    features = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[tone_clip(3.0)], sampling_rate=16000)[
        "input_features"
    ]
    with torch.no_grad():
        ours = model.audio_tower(features).last_hidden_state
        ref = whisper.encoder(features).last_hidden_state
    assert torch.allclose(ours, ref, atol=1e-6)
    assert all(not p.requires_grad for p in model.audio_tower.parameters())
    assert not any("decoder" in name for name, _ in model.named_parameters())
    assert not any("decoder" in name for name, _ in model.named_modules())


def test_projector_has_no_bias_and_normal_init():
    model, _ = tiny_model_and_processor(seed=3, audio_d_model=256, hidden_size=128, num_attention_heads=8)
    proj = model.audio_projector
    assert proj.bias is None
    assert tuple(proj.weight.shape) == (128, 256)
    std = model.config.text_config.initializer_range
    assert abs(proj.weight.std().item() - std) / std < 0.05
    assert abs(proj.weight.mean().item()) < 0.1 * std


@pytest.mark.parametrize(
    "seconds,stride,expected_tokens,expected_chunks",
    [(4, 1, 200, 1), (75, 1, 3750, 3), (4, 2, 100, 1), (75, 2, 1875, 3)],
)
def test_token_counts_follow_real_audio(seconds, stride, expected_tokens, expected_chunks):
    model, processor = tiny_model_and_processor(seed=0, audio_pool_stride=stride)
    prompt = audio_prompt(processor)
    inputs = processor(text=[prompt], audio=[tone_clip(seconds)], sampling_rate=16000)
    audio_mask = inputs["input_ids"][0] == model.config.audio_token_id
    assert int(audio_mask.sum()) == expected_tokens
    positions = torch.nonzero(audio_mask).flatten()
    assert positions[-1] - positions[0] + 1 == expected_tokens  # one contiguous span
    assert inputs["input_features"].shape[0] == expected_chunks
    with torch.no_grad():
        assert (
            model.get_audio_features(inputs["input_features"], inputs["input_features_mask"]).shape[0]
            == expected_tokens
        )


def test_two_clips_are_two_spans(tiny_family):
    model, processor = tiny_family
    prompt = audio_prompt(processor, n_clips=2)
    inputs = processor(text=[prompt], audio=[tone_clip(1.0), tone_clip(2.0)], sampling_rate=16000)
    mask = (inputs["input_ids"][0] == model.config.audio_token_id).int()
    starts = int(((mask[1:] - mask[:-1]) == 1).sum())
    assert starts == 2 and int(mask.sum()) == 50 + 100


# ---------------------------------------------------------------- bad input
def _inputs(processor, seconds=1.0):
    return processor(text=[audio_prompt(processor)], audio=[tone_clip(seconds)], sampling_rate=16000)


def test_error_token_count_mismatch(tiny_family):
    model, processor = tiny_family
    inputs = _inputs(processor)
    ids = inputs["input_ids"]
    first = int(torch.nonzero(ids[0] == model.config.audio_token_id)[0])
    inputs["input_ids"] = torch.cat([ids[:, : first + 1], ids[:, first + 2 :]], dim=1)
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    inputs["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, 1:]
    with pytest.raises(ValueError, match=r"49 <\|AUDIO\|>.*\(50\)"):
        model(**inputs)


def test_error_audio_without_placeholder(tiny_family):
    model, processor = tiny_family
    with pytest.raises(ValueError, match="0 <.AUDIO.> placeholders but 1 audio clips"):
        processor(text=["no placeholder"], audio=[tone_clip(1.0)], sampling_rate=16000)
    text_only = processor(text=["no placeholder"])
    features = _inputs(processor)
    with pytest.raises(ValueError, match=r"\(0 <\|AUDIO\|> tokens\).*\(50\)"):
        model(
            **text_only, input_features=features["input_features"], input_features_mask=features["input_features_mask"]
        )


def test_error_placeholder_without_audio(tiny_family):
    model, processor = tiny_family
    with pytest.raises(ValueError, match="1 <.AUDIO.> placeholders but no audio"):
        processor(text=[audio_prompt(processor)])
    ids = processor.tokenizer(["<|audio_bos|><|AUDIO|><|AUDIO|><|audio_eos|>"], return_tensors="pt")
    with pytest.raises(ValueError, match="2 <.AUDIO.> placeholder tokens but no audio"):
        model(**ids)


def test_error_wrong_mel_bins(tiny_family):
    model, processor = tiny_family
    inputs = _inputs(processor)
    inputs["input_features"] = inputs["input_features"][:, :80]
    with pytest.raises(ValueError, match="80 mel bins but the audio encoder expects 128"):
        model(**inputs)


def test_error_empty_audio(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="empty|zero-length|0 samples"):
        processor(text=[audio_prompt(processor)], audio=[np.zeros(0, dtype=np.float32)], sampling_rate=16000)


def test_error_nan_features(tiny_family):
    model, processor = tiny_family
    inputs = _inputs(processor)
    inputs["input_features"][0, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        model(**inputs)

"""The processor's audio placeholder expansion: expanding token ids after tokenising (the fast path) gives exactly
what tokenising the expanded text gives, for every padding side, several clips per prompt and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_adapter.testing import tiny_processor
from audio_adapter.tokenizer import AUDIO_TOKEN
from tests.conftest import tone_clip


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def _reference(processor, texts, clips, padding=True, **tokenizer_kwargs):
    counts = [processor.audio_token_count(len(c)) for c in clips]
    expanded = processor._expand_audio_placeholders(texts, counts)
    return processor.tokenizer(expanded, padding=padding, return_tensors="pt", **tokenizer_kwargs)


CLIP = f"<|audio_bos|>{AUDIO_TOKEN}<|audio_eos|>"
TEXTS = [
    f"<|im_start|>user\n{CLIP}What is it?<|im_end|>\n<|im_start|>assistant\n",
    f"two {CLIP} clips{CLIP}, glued to text",
    f"{CLIP}",
]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_expanded_ids_equal_tokenising_the_expanded_text(processor, padding_side):
    clips = [tone_clip(3.0), tone_clip(0.5, 880.0), tone_clip(41.0, 220.0), tone_clip(0.01)]
    ours = processor(text=TEXTS, audio=clips, sampling_rate=16000, padding_side=padding_side)
    ref = _reference(processor, TEXTS, clips, padding_side=padding_side)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])
    assert int((ours["input_ids"] == processor.audio_token_id).sum()) == sum(
        processor.audio_token_count(len(c)) for c in clips
    )


def test_expanded_ids_with_images(processor):
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype("uint8")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "Both?"}]}],
        add_generation_prompt=True,
    )
    clip = tone_clip(2.0)
    ours = processor(text=[text, f"short {CLIP}"], audio=[clip, clip], images=[image], sampling_rate=16000)
    image_inputs = processor.image_processor(images=[image], return_tensors="pt")
    texts = processor._expand_image_placeholders([text, f"short {CLIP}"], image_inputs["image_grid_thw"])
    ref = _reference(processor, texts, [clip, clip])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])


def test_other_tokenizer_options_take_the_text_path(processor):
    clips = [tone_clip(1.0), tone_clip(2.0)]
    texts = [f"a {CLIP}", f"b {CLIP} longer text here"]
    ours = processor(text=texts, audio=clips, sampling_rate=16000, padding="max_length", max_length=200)
    assert ours["input_ids"].shape == (2, 200)
    ref = _reference(processor, texts, clips, padding="max_length", max_length=200)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])


def test_bad_padding_side_names_the_value(processor):
    with pytest.raises(ValueError, match="'middle'"):
        processor(text=[f"a {CLIP}"], audio=[tone_clip(1.0)], sampling_rate=16000, padding_side="middle")

"""AudioCollator: right vs left padding, feature order = sample order, per-sample chunk counts (a clip longer
than one window), label masking for multi-turn chats, generation batches, images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.data.collate import IGNORE_INDEX, AudioCollator, model_inputs
from recipes.data.samples import normalize_messages

WINDOW_SECONDS = 3.0  # tiny_processor(max_source_positions=150): 150 encoder frames x 2 x 10 ms


@pytest.fixture(scope="module")
def processor():
    from audio_adapter.testing import tiny_processor

    return tiny_processor(**TINY_3S)


def _clip(seconds: float, freq: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return torch.from_numpy(
        (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    )


def _sample(key, seconds, freq, prompt, response, seed=0, image=None):
    record = {"prompt": prompt, "response": response}
    return {
        "key": key,
        "audio": _clip(seconds, freq, seed),
        "messages": normalize_messages(record, has_image=image is not None),
        "image": image,
    }


@pytest.fixture(scope="module")
def samples():
    return [
        _sample("short", 1.0, 300.0, "Which notes are played?", "C4 E4", seed=1),
        _sample("long", 7.0, 600.0, "Q?", "a much longer answer with several words in it", seed=2),  # 3 windows
        _sample("mid", 2.5, 900.0, "What do you hear in this recording, please?", "G4", seed=3),
    ]


def test_right_and_left_padding(processor, samples):
    pad = processor.tokenizer.pad_token_id
    right = AudioCollator(processor, padding_side="right")(samples)
    left = AudioCollator(processor, padding_side="left")(samples)
    assert right["input_ids"].shape == left["input_ids"].shape
    lengths = right["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == 3  # every row has a different length, so padding shows
    L = right["input_ids"].shape[1]
    for row, n in enumerate(lengths.tolist()):
        assert right["attention_mask"][row, :n].all() and not right["attention_mask"][row, n:].any()
        assert (right["input_ids"][row, n:] == pad).all()
        assert left["attention_mask"][row, L - n :].all() and not left["attention_mask"][row, : L - n].any()
        assert (left["input_ids"][row, : L - n] == pad).all()
        assert torch.equal(right["input_ids"][row, :n], left["input_ids"][row, L - n :])  # same tokens
        assert (right["labels"][row, n:] == IGNORE_INDEX).all()
        assert (left["labels"][row, : L - n] == IGNORE_INDEX).all()
    # the shorter rows really are padded on the expected side
    shortest = int(lengths.argmin())
    assert right["input_ids"][shortest, -1] == pad and left["input_ids"][shortest, 0] == pad
    assert AudioCollator(processor).padding_side == "right"
    assert AudioCollator(processor, for_generation=True).padding_side == "left"
    with pytest.raises(ValueError):
        AudioCollator(processor, padding_side="middle")


def test_feature_order_and_chunk_counts(processor, samples):
    batch = AudioCollator(processor)(samples)
    assert batch["keys"] == ["short", "long", "mid"]
    assert batch["audio_chunk_counts"].tolist() == [1, 3, 1]  # 7 s over 3 s windows -> 3 chunks
    feats, mask = batch["input_features"], batch["input_features_mask"]
    assert feats.shape[0] == mask.shape[0] == 5
    start = 0
    for s, n in zip(samples, batch["audio_chunk_counts"].tolist()):
        alone = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[s["audio"]], sampling_rate=16000)
        assert torch.allclose(feats[start : start + n], alone["input_features"], atol=1e-5)
        assert torch.equal(mask[start : start + n], alone["input_features_mask"])
        start += n
    # reversing the samples reverses the chunk blocks
    rev = AudioCollator(processor)(samples[::-1])
    assert torch.allclose(rev["input_features"][0:1], feats[4:5], atol=1e-5)
    assert torch.allclose(rev["input_features"][1:4], feats[1:4], atol=1e-5)
    # one placeholder run per row, as long as the processor says for that clip
    audio_id = processor.audio_token_id
    for row, s in enumerate(samples):
        n_tokens = int((batch["input_ids"][row] == audio_id).sum())
        assert n_tokens == processor.audio_token_count(s["audio"].shape[-1]) == int(batch["audio_token_counts"][row])
    assert set(model_inputs(batch)) <= {
        "input_ids",
        "attention_mask",
        "labels",
        "mm_token_type_ids",
        "input_features",
        "input_features_mask",
    }
    assert "labels" not in model_inputs(batch, with_labels=False)


def test_labels_cover_every_assistant_turn(processor):
    tok = processor.tokenizer
    messages = normalize_messages(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "First?"}]},
                {"role": "assistant", "content": "one"},
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": [{"type": "text", "text": "two three"}]},
            ]
        }
    )
    batch = AudioCollator(processor)([{"key": "k", "audio": _clip(1.2, 440.0, 0), "messages": messages}])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    kept = labels != IGNORE_INDEX
    assert tok.decode(ids[kept].tolist(), skip_special_tokens=False) == "one<|im_end|>two three<|im_end|>"
    # nothing of the user, system or audio tokens is trained on
    assert not kept[ids == processor.audio_token_id].any()
    runs = torch.diff(kept.int()).ne(0).sum()
    assert runs == 4  # two separate spans


def test_generation_batches(processor, samples):
    batch = AudioCollator(processor, for_generation=True)(samples)
    assert "labels" not in batch
    assert batch["references"] == ["C4 E4", "a much longer answer with several words in it", "G4"]
    tok = processor.tokenizer
    for row in range(len(samples)):
        text = tok.decode(
            batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist(), skip_special_tokens=False
        )
        assert text.endswith("<|im_start|>assistant\n")
        assert batch["references"][row] not in text
    assert batch["attention_mask"][:, -1].all()  # left padded


def test_images_are_collated(processor, samples):
    from PIL import Image

    img = Image.new("RGB", (64, 48), (10, 120, 200))
    with_image = [samples[0], _sample("img", 1.5, 500.0, "Look and listen.", "blue", seed=4, image=img)]
    batch = AudioCollator(processor)(with_image)
    assert "pixel_values" in batch and batch["image_grid_thw"].shape == (1, 3)
    image_id = processor.image_token_id
    assert not (batch["input_ids"][0] == image_id).any() and (batch["input_ids"][1] == image_id).any()
    assert (batch["mm_token_type_ids"][1] == 1).sum() == (batch["input_ids"][1] == image_id).sum()
    kept = batch["labels"][1][batch["labels"][1] != IGNORE_INDEX]
    assert processor.tokenizer.decode(kept.tolist(), skip_special_tokens=False) == "blue<|im_end|>"

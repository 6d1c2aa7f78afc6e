"""scripts/extract_features.py: tensor shapes, and the saved tensors equal what the model computes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
from recipes.inference.common import chat_prompt, read_audio
from scripts import extract_features
from tests.helpers import save_tiny_checkpoint, write_tone


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    ckpt = save_tiny_checkpoint(root / "ckpt", seed=1)
    clips = [
        write_tone(root / "short.flac", 1.3, 300.0),
        write_tone(root / "long.wav", 31.0, 500.0, seed=4),
    ]  # 2 windows
    out = root / "out"
    index = extract_features.main(
        [
            "--model",
            str(ckpt),
            "--audio",
            *map(str, clips),
            "--layers",
            "0",
            "-1",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    model = AudioVLMForConditionalGeneration.from_pretrained(str(ckpt)).eval()
    processor = AudioVLMProcessor.from_pretrained(ckpt)
    return index, out, clips, model, processor


def test_index(extracted):
    index, out, clips, model, _ = extracted
    assert json.loads((out / "index.json").read_text()) == index
    assert index["layers"] == [0, model.config.text_config.num_hidden_layers]
    assert [c["audio"] for c in index["clips"]] == [str(p) for p in clips]
    for clip in index["clips"]:
        assert (out / clip["file"]).is_file()


@pytest.mark.parametrize("which", [0, 1])
def test_shapes_and_values(extracted, which):
    index, out, clips, model, processor = extracted
    entry = index["clips"][which]
    saved = load_file(str(out / entry["file"]))
    waveform = read_audio(clips[which])
    n_tokens = processor.audio_token_count(len(waveform))
    hidden, d_audio = model.config.text_config.hidden_size, model.config.audio_config.d_model
    last = model.config.text_config.num_hidden_layers

    inputs = processor(
        text=[chat_prompt(processor, extract_features.DEFAULT_PROMPT)], audio=[waveform], sampling_rate=16000
    )
    seq = inputs["input_ids"].shape[1]
    assert saved["encoder_states"].shape == (n_tokens, d_audio)  # stride 1: one token per encoder frame
    assert saved["audio_embeds"].shape == (n_tokens, hidden)
    assert saved["hidden_states.0"].shape == saved[f"hidden_states.{last}"].shape == (seq, hidden)
    assert torch.equal(saved["input_ids"], inputs["input_ids"][0])
    assert int(saved["audio_mask"].sum()) == n_tokens == entry["n_audio_tokens"]
    assert set(saved) == {
        "encoder_states",
        "audio_embeds",
        "input_ids",
        "audio_mask",
        "hidden_states.0",
        f"hidden_states.{last}",
    }

    with torch.no_grad():
        projected = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
        full = model(**inputs, output_hidden_states=True)
        encoder = model.audio_tower(inputs["input_features"]).last_hidden_state
    torch.testing.assert_close(saved["audio_embeds"], projected, rtol=0, atol=1e-6)
    torch.testing.assert_close(saved["hidden_states.0"], full.hidden_states[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(saved[f"hidden_states.{last}"], full.hidden_states[-1][0], rtol=0, atol=1e-5)
    # encoder frames of real audio: all of window 1 and the start of window 2 for the 31 s clip
    valid = (
        torch.cat([encoder[0, : min(n_tokens, encoder.shape[1])], encoder[1, : n_tokens - encoder.shape[1]]])
        if which
        else encoder[0, :n_tokens]
    )
    torch.testing.assert_close(saved["encoder_states"], valid, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.audio_projector(saved["encoder_states"]), saved["audio_embeds"], rtol=0, atol=1e-6)


def test_layers_out_of_range():
    assert extract_features.resolve_layers([0, -1, 2, -3], 2) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        extract_features.resolve_layers([3], 2)
    with pytest.raises(ValueError, match="out of range"):
        extract_features.resolve_layers([-4], 2)


def test_control_tokens_in_prompt_are_a_cli_error(tmp_path, capsys):
    """``--prompt`` is user text: a chat-control token in it is refused (exit 2) before anything is loaded."""
    with pytest.raises(SystemExit) as exc:
        extract_features.main(
            [
                "--model",
                str(tmp_path),
                "--audio",
                "a.flac",
                "--out",
                str(tmp_path / "out"),
                "--prompt",
                "x <|audio_bos|> y",
            ]
        )
    assert exc.value.code == 2 and "<|audio_bos|>" in capsys.readouterr().err

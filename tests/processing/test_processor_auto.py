"""`AudioVLMProcessor` as a transformers `ProcessorMixin`: saved with the files transformers users expect, loaded by
`AutoProcessor` (and the model by `AutoModelForImageTextToText`) with identical outputs and generations; folders
saved in the older format still load; its feature extractor computes exactly the pure-torch log-mel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
from audio_adapter.encoders.audio_lengths import audio_token_count
from audio_adapter.processing.audio_features import LogMelSpectrogram, extract_features, prepare_waveform
from audio_adapter.processing.feature_extraction import AudioVLMFeatureExtractor
from audio_adapter.testing import tiny_model_and_processor
from tests.helpers import tone_clip

# 4 s windows, 80 mel bins, 2 encoder frames a token: small and away from every default, so a setting that
# failed to travel through save/load would show.
TINY = {"max_source_positions": 200, "num_mel_bins": 80, "audio_pool_stride": 2}
KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "input_features", "input_features_mask", "pixel_values")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor(seed=0, **TINY)
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.eval(), processor, folder


def _batch_args(processor, sr: int = 44100) -> dict:
    """Two prompts, three clips (one stereo at 44.1 kHz, one longer than a window) and one image."""
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype("uint8")
    both = [{"role": "user", "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "Both?"}]}]
    two = [{"role": "user", "content": [{"type": "audio"}, {"type": "audio"}, {"type": "text", "text": "Same?"}]}]
    texts = [processor.apply_chat_template(c, add_generation_prompt=True) for c in (both, two)]
    stereo = np.stack([tone_clip(1.5, 440.0, sr=sr), tone_clip(1.5, 660.0, sr=sr)])
    clips = [stereo, tone_clip(5.0, 220.0, sr=sr), tone_clip(0.3, 880.0, sr=sr)]
    return {"text": texts, "audio": clips, "images": [image], "sampling_rate": sr}


def _assert_same_inputs(a, b) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_saved_files_are_what_transformers_users_expect(saved):
    model, processor, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "chat_template.jinja",  # the chat template in its own file (transformers 5.x)
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",  # processor settings + nested image processor and feature extractor configs
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["processor_class"] == "AudioVLMProcessor"
    assert config["audio_frames_per_token"] == model.config.audio_frames_per_token == 2
    assert config["feature_extractor"]["feature_extractor_type"] == "AudioVLMFeatureExtractor"
    assert (config["feature_extractor"]["feature_size"], config["feature_extractor"]["chunk_length"]) == (80, 4.0)
    assert config["feature_extractor"]["sampling_rate"] == 16000
    assert config["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    assert json.loads((folder / "tokenizer_config.json").read_text())["processor_class"] == "AudioVLMProcessor"
    assert (folder / "chat_template.jinja").read_text() == processor.chat_template
    # each part loads on its own through its Auto class, as for any transformers processor
    assert len(AutoTokenizer.from_pretrained(folder)) == len(processor.tokenizer)
    assert AutoImageProcessor.from_pretrained(folder).to_dict() == processor.image_processor.to_dict()
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert isinstance(feature_extractor, AudioVLMFeatureExtractor)
    assert feature_extractor.to_dict() == processor.feature_extractor.to_dict()


def test_auto_classes_round_trip_outputs_and_generation(saved):
    model, processor, folder = saved
    loaded = AutoProcessor.from_pretrained(folder)
    reloaded = AutoModelForImageTextToText.from_pretrained(folder).eval()
    assert type(loaded) is AudioVLMProcessor and type(reloaded) is AudioVLMForConditionalGeneration
    assert (loaded.n_mels, loaded.chunk_seconds, loaded.audio_frames_per_token) == (80, 4.0, 2)
    assert loaded.control_tokens == processor.control_tokens and loaded.chat_template == processor.chat_template
    chat = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "hi"}]}]
    assert loaded.apply_chat_template(chat, add_generation_prompt=True) == processor.apply_chat_template(
        chat, add_generation_prompt=True
    )
    args = _batch_args(processor)
    ours, theirs = processor(**args), loaded(**args)
    assert set(KEYS) <= set(ours)
    _assert_same_inputs(ours, theirs)
    with torch.no_grad():
        before = model.generate(**ours, max_new_tokens=4, do_sample=False)
        after = reloaded.generate(**theirs, max_new_tokens=4, do_sample=False)
    assert torch.equal(before, after)
    assert loaded.batch_decode(after) == processor.batch_decode(before)


def test_older_saved_format_still_loads(saved, tmp_path):
    """A folder written before the ProcessorMixin port: tokenizer files, the image processor's
    preprocessor_config.json and audio_processor_config.json (what that save_pretrained wrote)."""
    model, processor, _ = saved
    processor.tokenizer.chat_template = processor.chat_template
    processor.tokenizer.save_pretrained(str(tmp_path))
    processor.image_processor.save_pretrained(str(tmp_path))
    settings = {"n_mels": 80, "chunk_seconds": 4.0, "audio_pool_stride": 2}
    (tmp_path / "audio_processor_config.json").write_text(json.dumps(settings))
    old = AudioVLMProcessor.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # with a model config there, AutoProcessor finds the processor class too
    auto = AutoProcessor.from_pretrained(tmp_path)
    assert type(auto) is AudioVLMProcessor
    args = _batch_args(processor)
    reference = processor(**args)
    for loaded in (old, auto):
        assert (loaded.n_mels, loaded.chunk_seconds, loaded.audio_frames_per_token) == (80, 4.0, 2)
        _assert_same_inputs(loaded(**args), reference)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an AudioVLMProcessor directory"):
        AudioVLMProcessor.from_pretrained(tmp_path / "empty")


def test_feature_extractor_computes_the_pure_torch_log_mel(saved):
    """What the processor produced before the port: prepare_waveform + extract_features with a LogMelSpectrogram."""
    _, processor, _ = saved
    clips = _batch_args(processor)["audio"]
    reference = extract_features([prepare_waveform(c, 44100) for c in clips], LogMelSpectrogram(80, 4.0))
    direct = processor.feature_extractor(clips, sampling_rate=44100)
    through = processor(**_batch_args(processor))
    for key in ("input_features", "input_features_mask"):
        assert torch.equal(direct[key], reference[key]) and torch.equal(through[key], reference[key]), key
    assert set(direct) == {"input_features", "input_features_mask"}
    with pytest.raises(ValueError, match="sampling_rate is required"):
        processor.feature_extractor(clips)
    for bad in ({"sampling_rate": 22050}, {"hop_length": 320}, {"n_fft": 512}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AudioVLMFeatureExtractor(**bad)


def test_token_counts_use_frames_per_token_and_are_returned_on_request(saved):
    _, processor, _ = saved
    args = _batch_args(processor)
    plain = processor(**args)
    assert "audio_token_counts" not in plain and "audio_chunk_counts" not in plain  # model(**inputs) stays valid
    counted = processor(**args, return_audio_token_counts=True)
    samples = [len(w) for w in processor.prepare_audio(args["audio"], args["sampling_rate"])]
    expected = [audio_token_count(n, 4.0, 2) for n in samples]
    assert counted["audio_token_counts"].tolist() == expected == [38, 100 + 25, 8]  # 1.5 s, 5 s (4 s + 1 s), 0.3 s
    assert counted["audio_chunk_counts"].tolist() == [1, 2, 1]
    per_row = (counted["input_ids"] == processor.audio_token_id).sum(1).tolist()
    assert per_row == [expected[0], expected[1] + expected[2]]
    _assert_same_inputs({k: counted[k] for k in plain}, plain)
    text_only = processor(text=["no audio"], return_audio_token_counts=True)
    assert text_only["audio_token_counts"].tolist() == [] and text_only["audio_chunk_counts"].tolist() == []


def test_audio_pool_stride_is_an_alias_of_frames_per_token(saved):
    _, processor, _ = saved
    parts = (processor.tokenizer, processor.image_processor)
    for kwargs in (
        {"audio_frames_per_token": 4},
        {"audio_pool_stride": 4},
        {"audio_frames_per_token": 4, "audio_pool_stride": 4},
    ):
        assert AudioVLMProcessor(*parts, n_mels=80, chunk_seconds=4.0, **kwargs).audio_token_count(16000) == 13
    assert AudioVLMProcessor(*parts).audio_frames_per_token == 1
    with pytest.raises(ValueError, match="disagree"):
        AudioVLMProcessor(*parts, audio_frames_per_token=2, audio_pool_stride=4)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=rf"audio_frames_per_token must be an integer >= 1, got {bad}"):
            AudioVLMProcessor(*parts, audio_frames_per_token=bad)
    with pytest.raises(ValueError, match="n_mels=128 disagrees"):
        AudioVLMProcessor(*parts, processor.feature_extractor, n_mels=128)
    with pytest.raises(TypeError, match="must be an AudioVLMFeatureExtractor, got int"):
        AudioVLMProcessor(*parts, 128)  # the third positional argument used to be n_mels


def test_assembled_real_checkpoint_folder_round_trips_through_auto_classes(hub_replicas, tmp_path):
    """``scripts.assemble`` on the offline replicas of Qwen2-VL-7B-Instruct and whisper-large-v3-turbo (full
    Qwen vocabulary, 128 mel bins, 30 s windows): the folder loads through the Auto classes, equal to the
    processor built from the hub files (`from_parts`, reusing the loaded tokenizer) and the model class."""
    from scripts.assemble import assemble

    vlm, whisper = str(hub_replicas["vlm"]), str(hub_replicas["whisper"])
    folder = assemble(vlm, whisper, tmp_path / "assembled")
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    assert type(processor) is AudioVLMProcessor and type(model) is AudioVLMForConditionalGeneration
    assert (processor.n_mels, processor.chunk_seconds, processor.audio_frames_per_token) == (128, 30.0, 1)
    for name in ("audio_bos_token_id", "audio_token_id", "audio_eos_token_id", "image_token_id"):
        assert getattr(processor, name) == getattr(model.config, name), name
    fresh = AudioVLMProcessor.from_parts(vlm, whisper, tokenizer=processor.tokenizer)
    assert fresh.tokenizer is processor.tokenizer  # read once, not twice
    image = (np.random.default_rng(1).random((56, 84, 3)) * 255).astype("uint8")
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "What?"}]}]
    args = {
        "text": [processor.apply_chat_template(chat, add_generation_prompt=True)],
        "audio": [tone_clip(1.0, sr=22050)],
        "images": [image],
        "sampling_rate": 22050,
    }
    batch = processor(**args)
    _assert_same_inputs(fresh(**args), batch)
    direct = AudioVLMForConditionalGeneration.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        assert torch.equal(model.generate(**batch, max_new_tokens=3), direct.generate(**batch, max_new_tokens=3))


def test_returned_counts_equal_what_the_collator_recounts(saved):
    """`recipes.data.collate.AudioCollator` recounts windows and tokens per sample; the processor's own counts
    (``return_audio_token_counts=True``) are the same numbers, so the collator can take them instead."""
    from recipes.data.collate import AudioCollator

    _, processor, _ = saved
    chat = [
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A tone."}]},
    ]
    clips = [tone_clip(s, 300.0 + 100 * i) for i, s in enumerate((0.2, 4.0, 9.5))]
    batch = AudioCollator(processor)([{"messages": chat, "audio": clip} for clip in clips])
    counted = processor(
        text=[processor.apply_chat_template(chat)] * 3,
        audio=clips,
        sampling_rate=16000,
        padding_side="right",
        return_audio_token_counts=True,
    )
    for key in ("audio_token_counts", "audio_chunk_counts", "input_ids", "input_features"):
        assert torch.equal(counted[key], batch[key]), key

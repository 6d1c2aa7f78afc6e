"""Issue: save/load round trip and real-checkpoint loading that is never silently random."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from audio_adapter import AudioVLMProcessor, load_pretrained_parts
from audio_adapter.families import FAMILIES
from audio_adapter.pretrained.loading import CheckpointMismatchError
from audio_adapter.testing import tiny_model_and_processor, tiny_qwen2vl_kwargs
from tests.helpers import audio_prompt, tone_clip


def test_save_load_round_trip_identical_logits(tmp_path, family):
    extension = {"method": "partial_yarn", "cutoff": 2, "temperature": 1.2, "base_audio_seconds": 1.0}
    model, processor = tiny_model_and_processor(seed=1, family=family, audio_pool_stride=2, context_extension=extension)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    loaded_processor = AudioVLMProcessor.from_pretrained(tmp_path)
    assert type(loaded) is FAMILIES[family].model_class
    assert type(AutoConfig.from_pretrained(tmp_path)) is FAMILIES[family].config_class
    assert loaded.config.audio_pool_stride == 2
    assert loaded.context_extension.method == "partial_yarn" and loaded.context_extension.cutoff == 2
    assert loaded.config.audio_token_id == model.config.audio_token_id
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name

    inputs = processor(text=[audio_prompt(processor)], audio=[tone_clip(3.0)], sampling_rate=16000)
    reloaded_inputs = loaded_processor(
        text=[audio_prompt(loaded_processor)], audio=[tone_clip(3.0)], sampling_rate=16000
    )
    assert torch.equal(inputs["input_ids"], reloaded_inputs["input_ids"])
    assert torch.equal(inputs["input_features"], reloaded_inputs["input_features"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**reloaded_inputs).logits)


def _stock_checkpoint(tmp_path, model):
    cfg = model.config
    stock_cfg = Qwen2VLConfig(
        **tiny_qwen2vl_kwargs(cfg.text_config.vocab_size),
        image_token_id=cfg.image_token_id,
        video_token_id=cfg.video_token_id,
        vision_start_token_id=cfg.vision_start_token_id,
        vision_end_token_id=cfg.vision_end_token_id,
    )
    torch.manual_seed(7)
    stock = Qwen2VLForConditionalGeneration(stock_cfg)
    path = tmp_path / "qwen2vl"
    stock.save_pretrained(path)
    return stock, path


def _whisper_checkpoint(tmp_path, audio_config: WhisperConfig, name="whisper"):
    torch.manual_seed(11)
    whisper = WhisperForConditionalGeneration(audio_config)
    path = tmp_path / name
    whisper.save_pretrained(path)
    return whisper, path


def test_load_pretrained_parts_loads_every_weight(tmp_path):
    model, processor = tiny_model_and_processor(seed=0)
    stock, vlm_path = _stock_checkpoint(tmp_path, model)
    whisper, whisper_path = _whisper_checkpoint(tmp_path, model.config.audio_config)

    loaded = load_pretrained_parts(vlm=str(vlm_path), whisper=str(whisper_path), tokenizer=processor.tokenizer)
    ours = loaded.state_dict()
    stock_state = stock.state_dict()
    assert len(stock_state) > 20
    for name, tensor in stock_state.items():
        if name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            # everything but the three new audio rows is the checkpoint's
            keep = torch.ones(tensor.shape[0], dtype=torch.bool)
            keep[[loaded.config.audio_bos_token_id, loaded.config.audio_token_id, loaded.config.audio_eos_token_id]] = (
                False
            )
            assert torch.equal(ours[name][keep], tensor[keep]), name
        else:
            assert torch.equal(ours[name], tensor), name
    for name, tensor in whisper.model.encoder.state_dict().items():
        assert torch.equal(ours[f"audio_tower.{name}"], tensor), name
    assert torch.equal(loaded.audio_tower.conv1.weight, whisper.model.encoder.conv1.weight)
    # the new token rows are the mean embedding, not untrained spare rows
    embed = loaded.get_input_embeddings().weight
    mean = stock_state["model.language_model.embed_tokens.weight"][: loaded.config.audio_bos_token_id].mean(0)
    assert torch.allclose(embed[loaded.config.audio_token_id], mean, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.audio_tower.parameters())
    with torch.no_grad():
        out = loaded(**processor(text=[audio_prompt(processor)], audio=[tone_clip(1.0)], sampling_rate=16000))
    assert torch.isfinite(out.logits).all()


def test_load_pretrained_parts_raises_on_mismatched_whisper(tmp_path):
    model, processor = tiny_model_and_processor(seed=0)
    _, vlm_path = _stock_checkpoint(tmp_path, model)
    _, whisper_path = _whisper_checkpoint(tmp_path, model.config.audio_config)
    from safetensors.torch import load_file, save_file

    file = whisper_path / "model.safetensors"
    state = {k: v for k, v in load_file(str(file)).items() if not k.startswith("model.encoder.layers.1.")}
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match="missing.*layers.1"):
        load_pretrained_parts(vlm=str(vlm_path), whisper=str(whisper_path), tokenizer=processor.tokenizer)


def test_load_pretrained_parts_raises_on_unexpected_vlm_keys(tmp_path):
    model, processor = tiny_model_and_processor(seed=0)
    stock, vlm_path = _stock_checkpoint(tmp_path, model)
    _, whisper_path = _whisper_checkpoint(tmp_path, model.config.audio_config)
    from safetensors.torch import load_file, save_file

    file = vlm_path / "model.safetensors"
    state = load_file(str(file))
    state["model.some_stray_module.weight"] = torch.zeros(3)
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        load_pretrained_parts(vlm=str(vlm_path), whisper=str(whisper_path), tokenizer=processor.tokenizer)


def test_load_pretrained_parts_refuses_a_saved_audio_folder_as_either_part(tmp_path):
    """A folder this toolkit saved is a whole audio model, not a part: say so and how to load it (it died with
    ``TypeError: ... got multiple values for keyword argument 'projector_type'`` as vlm=, and pointed at a load
    report our own filter had hidden as whisper=)."""
    model, processor = tiny_model_and_processor(seed=0)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    _, vlm_path = _stock_checkpoint(tmp_path, model)
    _, whisper_path = _whisper_checkpoint(tmp_path, model.config.audio_config)
    with pytest.raises(ValueError, match=r"is an audio model this toolkit saved .*AudioVLMForConditionalGeneration"):
        load_pretrained_parts(vlm=str(saved), whisper=str(whisper_path), tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match=r"is not a Whisper checkpoint \(its config's model_type is 'audio_vlm'\)"):
        load_pretrained_parts(vlm=str(vlm_path), whisper=str(saved), tokenizer=processor.tokenizer)

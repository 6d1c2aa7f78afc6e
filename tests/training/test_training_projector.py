"""The projector is trained, saved and loaded as a whole state dict, whatever its type: stage 1 trains every
projector tensor + the token rows, stage 2 LoRA + every projector tensor; the file holds every tensor under
``audio_projector.`` and loading it is strict (missing / unexpected keys, shapes, projector type: a ValueError
naming them and the file). The acceptance test switches the tiny model to ``stack_mlp`` with one config field."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from audio_adapter.encoders.whisper import SAMPLING_RATE
from audio_adapter.testing import TINY_3S
from recipes.training.module import AudioVLMLightningModule
from recipes.training.projector_file import (
    PROJECTOR_FILE,
    TOKEN_ROWS_KEY,
    load_projector_file,
    read_projector_file,
    save_projector_file,
)
from tests.helpers import (
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)

HAS_PROJECTOR_MODULE = importlib.util.find_spec("audio_adapter.model.projector") is not None


class TwoLayerProjector(nn.Module):
    """A projector of three tensors (two matrices and a gain vector), standing in for any non-linear one."""

    def __init__(self, d_audio: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(d_audio, 2 * hidden, bias=False)
        self.gain = nn.Parameter(torch.ones(2 * hidden))
        self.down = nn.Linear(2 * hidden, hidden, bias=False)

    @property
    def weight(self) -> torch.Tensor:  # the model reads the projector's dtype / device from .weight
        return self.up.weight

    def forward(self, frames: torch.Tensor, token_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Selected frames (..., d_audio), or (N, T, d_audio) + (N,) counts (the first counts[i] frames of
        window i) -> (tokens, hidden): either calling convention of the model."""
        if token_lengths is not None:
            lengths = token_lengths.to(frames.device)
            frames = frames[torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]]
        return self.down(torch.tanh(self.up(frames.to(self.up.weight.dtype))) * self.gain)


def _tiny(two_layer: bool = False):
    from audio_adapter.testing import tiny_model_and_processor

    net, processor = tiny_model_and_processor(seed=0, **TINY_3S)
    if two_layer:
        torch.manual_seed(1)
        net.audio_projector = TwoLayerProjector(net.config.audio_config.d_model, net.config.text_config.hidden_size)
    return net, processor


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("projector_data"), num=8, seed=0, maxcount=4)


def _projector_state(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.audio_projector.state_dict().items()}


def test_any_projector_trains_saves_and_reloads_whole(shards, tmp_path):
    names = ["model.audio_projector.down.weight", "model.audio_projector.gain", "model.audio_projector.up.weight"]
    stage1 = AudioVLMLightningModule(stage=1, lr=1e-2, _model_and_processor=_tiny(two_layer=True))
    assert sorted(stage1.trainable_parameter_names()) == ["audio_token_rows.delta", *names]
    groups = stage1.configure_optimizers()["optimizer"].param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(stage1.audio_vlm.audio_projector.gain) in no_decay  # vectors never decay
    before = _projector_state(stage1.audio_vlm)
    trainer(3).fit(stage1, datamodule(shards["glob"]))
    after = _projector_state(stage1.audio_vlm)
    assert all(not torch.equal(before[k], after[k]) for k in before), "every projector tensor trains"
    out = stage1.save_trained(tmp_path / "s1")

    tensors, meta = read_projector_file(out)
    assert set(tensors) == {"audio_projector." + k for k in after} | {TOKEN_ROWS_KEY}
    assert meta["projector_type"] == "linear"  # the config's type: this stand-in replaced the module only
    fresh, _ = _tiny(two_layer=True)
    load_projector_file(fresh, out)
    assert all(torch.equal(after[k], v) for k, v in _projector_state(fresh).items())
    plain, _ = _tiny()
    with pytest.raises(ValueError, match=r"projector\.safetensors.*missing \['audio_projector\.weight'\].*unexpected"):
        load_projector_file(plain, out)

    # stage 2: LoRA + every projector tensor, starting from the stage-1 file
    stage2 = AudioVLMLightningModule(stage=2, init_from=str(out), lr=1e-2, _model_and_processor=_tiny(two_layer=True))
    trainable = stage2.trainable_parameter_names()
    assert sorted(n for n in trainable if "lora_" not in n) == sorted("model.base_model." + n for n in names)
    assert all(torch.equal(after[k], v) for k, v in _projector_state(stage2.audio_vlm).items())
    trainer(2).fit(stage2, datamodule(shards["glob"]))
    moved = _projector_state(stage2.audio_vlm)
    assert all(not torch.equal(after[k], moved[k]) for k in after)


def test_projector_file_checks_shape_and_type(tmp_path):
    net, _ = _tiny()
    rows = torch.zeros(3, net.config.text_config.hidden_size)
    ids = [net.config.audio_bos_token_id, net.config.audio_token_id, net.config.audio_eos_token_id]
    wrong = nn.Linear(3, 5, bias=False)
    save_projector_file(tmp_path / "shape.safetensors", wrong, ids, rows, stage=1, kind="linear")
    with pytest.raises(ValueError, match=r"shape\.safetensors.*audio_projector\.weight: file \(5, 3\), model"):
        load_projector_file(net, tmp_path / "shape.safetensors")
    save_projector_file(tmp_path / "type.safetensors", net.audio_projector, ids, rows, stage=1, kind="stack_mlp")
    with pytest.raises(ValueError, match=r"type\.safetensors.*'stack_mlp' projector.*'linear'"):
        load_projector_file(net, tmp_path / "type.safetensors")


def test_files_of_the_first_format_still_load(tmp_path):
    """Written before the projector type was recorded: one ``audio_projector.weight`` tensor, format /1."""
    from safetensors.torch import save_file

    net, _ = _tiny()
    weight = torch.randn_like(net.audio_projector.weight)
    rows = torch.randn(3, net.config.text_config.hidden_size)
    ids = [net.config.audio_bos_token_id, net.config.audio_token_id, net.config.audio_eos_token_id]
    meta = {"format": "audio_vlm_projector/1", "audio_token_ids": json.dumps(ids), "stage": "1"}
    save_file({"audio_projector.weight": weight, TOKEN_ROWS_KEY: rows}, str(tmp_path / PROJECTOR_FILE), metadata=meta)
    load_projector_file(net, tmp_path)
    assert torch.equal(net.audio_projector.weight, weight)
    assert torch.equal(net.get_input_embeddings().weight[ids], rows)


@pytest.mark.skipif(
    not HAS_PROJECTOR_MODULE,
    reason="audio_adapter.model.projector (the configurable projector: projector_type / projector_stack_factor) is not "
    "in this tree yet; it comes with the model branch",
)
def test_stack_mlp_is_one_config_field(shards, tmp_path):
    """Acceptance: ``projector_type: stack_mlp`` trains (stage 1 + stage 2), saves, reloads (export) and generates."""
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
    from recipes.training.export import export

    overrides = {**TINY_3S, "projector_type": "stack_mlp", "projector_stack_factor": 2}
    stage1 = AudioVLMLightningModule("tiny", tiny_overrides=overrides, stage=1, lr=1e-2)
    assert stage1.audio_vlm.config.projector_type == "stack_mlp"
    before = _projector_state(stage1.audio_vlm)
    assert len(before) > 1
    names = sorted("model.audio_projector." + n for n, _ in stage1.audio_vlm.audio_projector.named_parameters())
    assert sorted(stage1.trainable_parameter_names()) == ["audio_token_rows.delta", *names]
    trainer(3).fit(stage1, datamodule(shards["glob"]))
    trained = _projector_state(stage1.audio_vlm)
    assert any(not torch.equal(before[k], trained[k]) for k in before)
    s1 = stage1.save_trained(tmp_path / "s1")
    assert read_projector_file(s1)[1]["projector_type"] == "stack_mlp"

    stage2 = AudioVLMLightningModule("tiny", tiny_overrides=overrides, stage=2, init_from=str(s1), lr=1e-2)
    assert all(torch.equal(trained[k], v) for k, v in _projector_state(stage2.audio_vlm).items())
    trainer(2).fit(stage2, datamodule(shards["glob"]))
    s2 = stage2.save_trained(tmp_path / "s2")

    merged_dir = export(s2, tmp_path / "merged")
    model = AudioVLMForConditionalGeneration.from_pretrained(str(merged_dir)).eval()
    processor = AudioVLMProcessor.from_pretrained(merged_dir)
    assert model.config.projector_type == "stack_mlp"
    conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is said?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    clip = torch.randn(SAMPLING_RATE).numpy() * 0.1  # 1 s
    inputs = processor(text=[text], audio=[clip], sampling_rate=SAMPLING_RATE)
    with torch.no_grad():
        trained_out = stage2.audio_vlm.eval().generate(**inputs, max_new_tokens=6, do_sample=False)
        reloaded_out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert reloaded_out.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(trained_out, reloaded_out)

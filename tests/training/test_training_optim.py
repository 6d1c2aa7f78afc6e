"""AdamW covers only the trainable tensors (frozen ones get no optimizer state), the encoder runs without
autograd, frozen weights never receive gradients; the learning-rate schedules."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.training.module import AudioVLMLightningModule
from tests.helpers import (
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("optim_data"), num=8, seed=2, maxcount=4)


class EncoderProbe:
    """Forward hooks recording whether the encoder output / projector output carry autograd history."""

    def __init__(self, model):
        self.encoder, self.projector = [], []
        model.audio_tower.register_forward_hook(lambda m, a, out: self.encoder.append(out.last_hidden_state.grad_fn))
        model.audio_projector.register_forward_hook(lambda m, a, out: self.projector.append(out.grad_fn))


@pytest.mark.parametrize("stage", [1, 2])
def test_optimizer_state_only_for_trainable_and_encoder_without_grad(stage, shards):
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=stage, lr=1e-3)
    probe = EncoderProbe(module.audio_vlm)
    tr = trainer(3)
    tr.fit(module, datamodule(shards["glob"]))

    optimizer = tr.optimizers[0]
    in_groups = {id(p) for g in optimizer.param_groups for p in g["params"]}
    with_state = {id(p) for p in optimizer.state}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert in_groups == trainable == with_state
    assert frozen and not any(id(p) in with_state for n, p in module.named_parameters() if not p.requires_grad)
    assert all(p.grad is None for p in module.parameters() if not p.requires_grad)
    # AdamW, with the configured learning rate, and no weight decay on the token-row delta
    assert isinstance(optimizer, torch.optim.AdamW)
    if stage == 1:
        delta = module.audio_token_rows.delta
        group = next(g for g in optimizer.param_groups if any(p is delta for p in g["params"]))
        assert group["weight_decay"] == 0.0

    # training forwards ran the encoder under no-grad, while the projector output is part of the graph
    assert probe.encoder and all(fn is None for fn in probe.encoder)
    assert probe.projector and all(fn is not None for fn in probe.projector)


def test_trainable_sets_per_stage():
    s1 = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1)
    assert sorted(s1.trainable_parameter_names()) == ["audio_token_rows.delta", "model.audio_projector.weight"]
    s2 = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=2, lora_targets=["q_proj", "v_proj"], lora_r=4)
    names = s2.trainable_parameter_names()
    assert any(n.endswith("audio_projector.weight") for n in names)
    assert {n.split(".")[-4] for n in names if "lora_" in n} == {"q_proj", "v_proj"}
    assert s2.model.peft_config["default"].r == 4
    assert s2.audio_token_rows is None


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_lr_schedules(kind):
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-3, scheduler=kind, warmup_steps=2)

    class FakeTrainer:
        max_steps = 10

    module._trainer = FakeTrainer()
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # linear warm-up
    if kind == "constant":
        assert lrs[2:] == [pytest.approx(1e-3)] * 8
    else:
        assert lrs[2] == pytest.approx(1e-3)  # the peak, then decay
        assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    module._trainer = None


def test_bf16_base_keeps_trainable_tensors_float32(shards):
    """bf16 base weights + bf16-mixed autocast (what the GPU recipes use; CPU autocast runs it here): the
    trainable tensors stay float32 for AdamW, the frozen ones stay bf16, and training runs."""
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=2, dtype="bfloat16", lr=1e-3)
    rec_losses = []

    class Rec(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rec_losses.append(float(outputs["loss"]))

    trainer(2, [Rec()], precision="bf16-mixed").fit(module, datamodule(shards["glob"]))
    assert len(rec_losses) == 2 and all(math.isfinite(x) for x in rec_losses)
    for name, p in module.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16), name


def test_gradient_checkpointing_same_gradients(shards):
    from recipes.data.collate import model_inputs
    from recipes.data.dataset import AudioShardDataset

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # same LoRA A init
        module = AudioVLMLightningModule(
            "tiny", tiny_overrides=TINY_3S, stage=2, lora_dropout=0.0, gradient_checkpointing=checkpointing
        )
        with torch.no_grad():  # non-zero LoRA B so that every LoRA tensor gets a gradient
            for name, p in module.named_parameters():
                if ".lora_B." in name:
                    p.fill_(0.01)
        assert module.audio_vlm.is_activation_checkpointing == checkpointing
        batch = next(iter(AudioShardDataset(shards["glob"], module.processor, batch_size=2)))
        module.model(**model_inputs(batch)).loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name

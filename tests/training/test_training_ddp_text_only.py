"""Issue: DDP stays in step when one rank's batch has no audio.

Two CPU processes (gloo) through Lightning's DDP with ``find_unused_parameters=False`` (its default), forked from
the test process (``ddp_fork``: no second interpreter start-up): rank 0 trains on batches with audio, rank 1 on
text-only batches. Without a zero-contribution path through the audio modules rank 1's projector gets no
gradient, its gradient reducer never completes the step and the run fails; with it, both ranks finish every
step of stage 1 and stage 2 with identical weights, and the audio rank's gradients train the projector.
"""

from __future__ import annotations

import json
from datetime import timedelta

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from audio_adapter.testing import TINY_3S
from recipes.data.collate import IGNORE_INDEX
from recipes.training.module import AudioVLMLightningModule
from tests.helpers import RankRecorder, audio_prompt, single_thread, tone_clip, trainer  # noqa: F401 (fixture)

STEPS = 3
ANSWERS = ["A low hum.", "Two notes, then silence."]


def rank_batch(processor, rank: int) -> dict:
    """Rank 0: two samples with audio; any other rank: two text-only samples. Labels on every real token."""
    if rank == 0:
        prompts = [audio_prompt(processor, "What do you hear?") + a for a in ANSWERS]
        clips = [tone_clip(1.0), tone_clip(0.6, 600.0)]
        batch = processor(text=prompts, audio=clips, sampling_rate=16000, padding=True)
    else:
        prompts = [f"<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n{a}" for a in ANSWERS]
        batch = processor(text=prompts, padding=True)
        assert "input_features" not in batch
    batch = dict(batch)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    batch["keys"] = [f"rank{rank}-{i}" for i in range(len(ANSWERS))]
    return batch


class PerRankBatches(pl.LightningDataModule):
    """The same rank-dependent batch ``STEPS`` times (built in each process, once its rank is known)."""

    def __init__(self, processor):
        super().__init__()
        self.processor = processor

    def train_dataloader(self):
        batch = rank_batch(self.processor, self.trainer.global_rank)
        return DataLoader([batch] * STEPS, batch_size=None)


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_rank_without_audio_trains_in_step(tmp_path, stage):
    module = AudioVLMLightningModule(model="tiny", tiny_overrides=TINY_3S, stage=stage, lr=1e-2, vlat=stage == 2)
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=20))  # find_unused_parameters=False
    fit = trainer(
        STEPS, callbacks=[RankRecorder(str(tmp_path))], strategy=strategy, devices=2, use_distributed_sampler=False
    )
    fit.fit(module, datamodule=PerRankBatches(module.processor))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["global_step"] for r in ranks] == [STEPS, STEPS]
    assert [r["keys"][0][0] for r in ranks] == ["rank0-0", "rank1-0"]  # rank 1 really trained on text only
    assert all(torch.isfinite(torch.tensor(r["losses"])).all() for r in ranks)
    final0, final1 = states[0]["final"], states[1]["final"]
    assert final0.keys() == final1.keys()
    projector = [n for n in final0 if n.endswith("audio_projector.weight")]
    assert len(projector) == 1 and (stage == 1 or any(".lora_" in n for n in final0))
    for name in final0:
        assert torch.equal(final0[name], final1[name]), f"stage {stage}: ranks diverged on {name}"
    # the projector trained: the audio rank's gradient, averaged with rank 1's zero gradient
    assert not torch.equal(states[0]["initial"][projector[0]], final0[projector[0]])


def test_text_only_training_forward_gives_the_projector_a_zero_gradient():
    """Single process: a training forward without audio reaches the trainable projector with an exactly-zero
    gradient and changes no logit; in eval mode nothing is added (the projector gets no gradient at all)."""
    from audio_adapter.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=0, **TINY_3S)
    model.requires_grad_(False)
    model.audio_projector.requires_grad_(True)
    batch = {k: v for k, v in rank_batch(processor, 1).items() if k != "keys"}
    with torch.no_grad():
        reference = model(**batch).logits  # eval mode: the stock text path
    model.train()
    out = model(**batch)
    out.loss.backward()
    grad = model.audio_projector.weight.grad
    assert grad is not None and grad.shape == model.audio_projector.weight.shape and not grad.any()
    assert torch.equal(out.logits.detach(), reference)  # the tiny LM has no dropout: train == eval
    model.eval()  # grad enabled but not training: the projector (the only trainable tensor) stays out of the graph
    assert torch.is_grad_enabled() and not model(**batch).loss.requires_grad

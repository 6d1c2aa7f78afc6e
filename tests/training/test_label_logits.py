"""Logits at label positions only give the stock forward's loss and the same per-token logits."""

from __future__ import annotations

import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.data.collate import model_inputs
from recipes.training.label_logits import accuracy_at_labels, forward_at_labels, next_token_targets
from recipes.training.module import token_accuracy
from tests.helpers import datamodule, make_shards, single_thread  # noqa: F401


def test_targets_are_the_next_labels_row_major():
    labels = torch.tensor([[-100, -100, 7, 8], [-100, 5, -100, 9]])
    keep, targets = next_token_targets(labels)
    assert keep.tolist() == [[False, True, True, False], [True, False, True, False]]
    assert targets.tolist() == [7, 8, 5, 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_logits_equal_the_full_forward(tmp_path, dtype):
    from audio_adapter.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(seed=0, **TINY_3S)
    model = model.to(dtype)
    shards = make_shards(tmp_path / "data", num=4, seed=0, maxcount=2)
    dm = datamodule(shards["glob"], batch_size=3, processor=processor)
    dm.setup("fit")
    inputs = model_inputs(next(iter(dm.train_dataloader())))
    with torch.no_grad():
        full = model(**inputs, use_cache=False)
        loss, logits, targets, _ = forward_at_labels(model, {**inputs, "use_cache": False})
    keep, _ = next_token_targets(inputs["labels"])
    assert torch.equal(logits, full.logits[keep].float())  # the very same rows, bit for bit
    torch.testing.assert_close(loss, full.loss.float(), rtol=1e-6, atol=0)
    acc, n = accuracy_at_labels(logits, targets)
    want_acc, want_n = token_accuracy(full.logits, inputs["labels"])
    assert n == want_n > 0 and acc == want_acc

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


@pytest.mark.parametrize("shape", [(5, 300), (2, 3, 300)])
def test_column_major_grad_is_the_identity_with_a_column_major_gradient(shape):
    from recipes.training.label_logits import column_major_grad

    weight = torch.randn(300, 8, dtype=torch.bfloat16, requires_grad=True)  # a vocabulary projection (V, H)
    hidden = torch.randn(*shape[:-1], 8, dtype=torch.bfloat16, requires_grad=True)
    seen = {}

    def grads(wrap):
        logits = torch.nn.functional.linear(hidden, weight)
        wrapped = wrap(logits)
        logits.register_hook(lambda g: seen.update(stride=g.reshape(-1, g.shape[-1]).stride()))
        torch.manual_seed(0)
        (wrapped.float() * torch.randn(shape)).sum().backward()
        out = (hidden.grad.clone(), weight.grad.clone())
        hidden.grad = weight.grad = None
        return torch.equal(wrapped, logits), out

    same, plain = grads(lambda x: x)
    assert same and seen["stride"] == (300, 1)  # autograd's own: row-major
    same, wrapped = grads(column_major_grad)
    rows = int(torch.tensor(shape[:-1]).prod())
    assert same and seen["stride"] == (1, rows)  # what the projection's backward matmul now reads
    for got, want in zip(wrapped, plain):
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)  # bf16: only the sum order


def test_column_major_grad_leaves_float32_and_no_grad_logits_alone():
    from recipes.training.label_logits import column_major_grad

    x = torch.randn(3, 4, requires_grad=True)
    assert column_major_grad(x) is x
    y = torch.randn(3, 4, dtype=torch.bfloat16)
    assert column_major_grad(y) is y

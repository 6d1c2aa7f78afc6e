"""Next-token cross-entropy computed from logits at the label positions only.

The stock forward projects every position onto the vocabulary before the loss reads the few answer tokens:
for a 30 s clip at 50 audio tokens a second that is a (1550, 152064) float tensor per sample, and on a CPU
without bf16 units its bf16 backward alone took 13 s a step for a 64-wide replica. Asking the stock forward
for the logits of label positions only (``logits_to_keep`` with a boolean mask, a documented transformers
argument) gives the same per-token logits and the same loss, at a fraction of the time and memory.

"The same loss" bit for bit: the mean is reduced over the whole (B, L) grid of positions as the stock loss
reduces it (`stock_mean_cross_entropy`); a plain mean over the N kept rows sums in another order and differed
from the stock loss by 1-2 float32 ulps a step, so the curve drifted from the one training had before.

On a CPU the logits' gradient is handed to the vocabulary projection's backward in column-major layout
(`column_major_grad`): the bf16 matmul ``grad (N, V) @ lm_head.weight (V, H)`` with row-major ``grad`` takes a
path that is ~200x slower on AVX2 CPUs without bf16 units (measured 9.1 s against 0.043 s for N 11, V 152,064,
H 128, one thread, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``; 54 s against 0.31 s for N 64). The
values are the same matmul's; only the order the kernel sums in may differ.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from recipes.data.collate import IGNORE_INDEX


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the model predicts a label, and which: ``labels`` (B, L) aligned with ``input_ids`` ->
    (keep (B, L) bool: position p predicts label p + 1, targets (N,) long, row-major over ``keep``)."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = shifted != IGNORE_INDEX
    return keep, shifted[keep]


def stock_mean_cross_entropy(logits: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy exactly as transformers' ``ForCausalLMLoss`` computes it from full logits.

    ``logits``: (N, V) float, the rows of ``keep`` (B, L) bool in row-major order; ``targets``: (N,). The stock
    loss is ``nll_loss(log_softmax(all B * L rows))`` with ignored rows skipped; nll_loss's (cascaded) sum depends
    on each value's row index, so the N log-probabilities are put back at their row of the (B * L, 1) grid (a
    column, not the vocabulary: the (B * L, V) tensor is never built) and reduced by the same kernel."""
    picked = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])  # (N, 1): log p(target), as the stock
    flat = keep.reshape(-1).to(logits.device)
    grid = picked.new_zeros(flat.numel(), 1).masked_scatter(flat[:, None], picked)
    grid_targets = torch.full_like(flat, IGNORE_INDEX, dtype=torch.long).masked_fill(flat, 0)
    return F.nll_loss(grid, grid_targets, ignore_index=IGNORE_INDEX)


class _ColumnMajorGrad(torch.autograd.Function):
    """Identity forward; backward passes the gradient on in column-major layout (see the module docstring)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.reshape(-1, grad.shape[-1])
        return flat.t().contiguous().t().view(grad.shape)  # (N, V) with strides (1, N); (B, L, V) folds to it


def column_major_grad(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (..., V) unchanged; on a CPU in bf16 / fp16 their gradient reaches the vocabulary projection in
    column-major layout, the fast path of its backward matmul there (module docstring). Elsewhere: ``logits``."""
    slow = logits.device.type == "cpu" and logits.dtype in (torch.bfloat16, torch.float16)
    return _ColumnMajorGrad.apply(logits) if slow and logits.requires_grad else logits


def forward_at_labels(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Run ``model`` on ``inputs`` (with ``labels``), computing logits at label positions only.

    Returns (loss scalar, mean cross-entropy as the stock loss defines it; logits (N, V) float;
    targets (N,); the model output)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep, targets = next_token_targets(labels)
    out = model(**inputs, logits_to_keep=keep)
    logits = column_major_grad(out.logits).float()
    loss = stock_mean_cross_entropy(logits, keep, targets.to(logits.device))
    return loss, logits, targets.to(logits.device), out


def accuracy_at_labels(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Greedy next-token accuracy over label positions: (accuracy scalar, N)."""
    n = int(targets.numel())
    if n == 0:
        return torch.zeros((), device=logits.device), 0
    return (logits.argmax(-1) == targets).float().mean(), n


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token accuracy on label positions from full (B, L, V) logits (labels aligned with input_ids)."""
    keep, targets = next_token_targets(labels)
    return accuracy_at_labels(logits[keep], targets.to(logits.device))

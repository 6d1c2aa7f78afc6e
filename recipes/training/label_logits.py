"""Next-token cross-entropy computed from logits at the label positions only.

The stock forward projects every position onto the vocabulary before the loss reads the few answer tokens:
for a 30 s clip at 50 audio tokens a second that is a (1550, 152064) float tensor per sample, and on a CPU
without bf16 units its bf16 backward alone took 13 s a step for a 64-wide replica. Asking the stock forward
for the logits of label positions only (``logits_to_keep`` with a boolean mask, a documented transformers
argument) gives the same per-token logits and the same loss, at a fraction of the time and memory.

"The same loss" bit for bit: the mean is reduced over the whole (B, L) grid of positions as the stock loss
reduces it (`stock_mean_cross_entropy`); a plain mean over the N kept rows sums in another order and differed
from the stock loss by 1-2 float32 ulps a step, so the curve drifted from the one training had before.
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


def forward_at_labels(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Run ``model`` on ``inputs`` (with ``labels``), computing logits at label positions only.

    Returns (loss scalar, mean cross-entropy as the stock loss defines it; logits (N, V) float;
    targets (N,); the model output)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep, targets = next_token_targets(labels)
    out = model(**inputs, logits_to_keep=keep)
    logits = out.logits.float()
    loss = stock_mean_cross_entropy(logits, keep, targets.to(logits.device))
    return loss, logits, targets.to(logits.device), out


def accuracy_at_labels(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Greedy next-token accuracy over label positions: (accuracy scalar, N)."""
    n = int(targets.numel())
    if n == 0:
        return torch.zeros((), device=logits.device), 0
    return (logits.argmax(-1) == targets).float().mean(), n

"""`AudioTokenRows`: the trainable delta of the three audio-token embedding rows (stage 1).

The rows are trained as a small separate delta (3 x hidden) added to the frozen embedding's output, so (a)
every other embedding row is bit-identical by construction, (b) neither the gradient nor the optimizer state
of the 152,064-row embedding is ever allocated (about 6.5 GB in float32 for the 7B model) and (c) the delta is
kept in float32 even when the base runs in bfloat16. It is merged into the rows on save.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class AudioTokenRows(nn.Module):
    """Trainable offsets for a few embedding rows, added to the (frozen) embedding's output by a forward hook.

    The embedding matrix itself never changes, so all other rows stay bit-identical; `merged_rows` gives the
    trained rows (base + delta) for saving."""

    def __init__(self, token_ids: Sequence[int], hidden_size: int):
        super().__init__()
        self.register_buffer("token_ids", torch.tensor(list(token_ids), dtype=torch.long), persistent=False)
        self.delta = nn.Parameter(torch.zeros(len(token_ids), hidden_size, dtype=torch.float32))
        self._handle = None

    def attach(self, embedding: nn.Module) -> None:
        self.detach_hook()
        self._handle = embedding.register_forward_hook(self._hook)

    def detach_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module, args, output):
        input_ids = args[0] if args else None
        if input_ids is None or not torch.is_tensor(input_ids) or input_ids.dtype not in (torch.long, torch.int):
            return output
        onehot = (input_ids[..., None] == self.token_ids.to(input_ids.device)).to(self.delta.dtype)
        extra = onehot @ self.delta  # (..., hidden); keeps delta in the graph even when no row occurs
        return (output.float() + extra).to(output.dtype)

    @torch.no_grad()
    def merged_rows(self, embedding_weight: torch.Tensor) -> torch.Tensor:
        """(n, hidden) float32: the rows the embedding would hold with the delta merged (as the forward sees them)."""
        base = embedding_weight[self.token_ids.to(embedding_weight.device)]
        return (base.float() + self.delta.float().to(base.device)).to(embedding_weight.dtype).float()

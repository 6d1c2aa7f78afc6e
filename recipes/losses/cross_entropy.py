"""`CrossEntropy`: the default loss, the model's own next-token cross-entropy on the label positions."""

from __future__ import annotations

import torch

from recipes.losses.base import Loss


class CrossEntropy(Loss):
    """``outputs.loss``: the mean cross-entropy of the next-token predictions at the label positions (the
    assistant turns; transformers' ``ForCausalLMLoss``), exactly what training minimised before losses were
    pluggable, so its loss curves are bit-identical to those. Logs nothing beyond ``train/loss``."""

    def __call__(self, module, batch: dict, outputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if outputs.loss is None:
            raise ValueError("CrossEntropy needs the forward's loss: the batch has no 'labels'")
        return outputs.loss, {}

"""The pieces of text-teacher distillation: the teacher's forward on the text twin (frozen, no gradient), the
logits at the response positions, and the temperature-softened KL between two sets of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch.nn import functional as F

from recipes.data.collate import IGNORE_INDEX
from recipes.data.text_twin import TEXT_TWIN_KEY

TWIN_MODEL_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")
SHARED_MODEL_INPUTS = ("pixel_values", "image_grid_thw")  # an image stays in the twin


@contextmanager
def frozen_teacher(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout, so the teacher pass draws no random numbers) with its peft adapters
    disabled (stage 2: the language model as it was before LoRA); every submodule's mode is restored after."""
    from peft import PeftModel

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with model.disable_adapter() if isinstance(model, PeftModel) else nullcontext():
            yield model
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def teacher_logits(module, batch: dict) -> torch.Tensor:
    """(B, L_twin, V) float32 logits of the frozen language model on ``batch["text_twin"]`` (no graph)."""
    twin = batch[TEXT_TWIN_KEY]
    inputs = {k: twin[k] for k in TWIN_MODEL_INPUTS if k in twin}
    inputs.update({k: batch[k] for k in SHARED_MODEL_INPUTS if k in batch})
    with frozen_teacher(module.model) as model:
        return model(**inputs, use_cache=False).logits.float()


def response_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token logits that predict a label: ``(N, V)`` rows of ``logits[:, :-1]`` where ``labels[:, 1:]``
    is not -100, in row-major order, and their ``(N,)`` targets. Two sequences whose label runs are equal give
    rows that predict the same tokens, whatever the positions (student with audio, twin with text)."""
    mask = labels[:, 1:] != IGNORE_INDEX
    return logits[:, :-1][mask], labels[:, 1:][mask]


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened next-token distributions, summed over the
    vocabulary, averaged over the N rows, times T^2 (gradients keep their size across temperatures).
    ``student``, ``teacher``: (N, V) logits. Zero (with a graph) when N is 0."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    if student.shape[0] == 0:
        return student.sum() * 0.0
    t = float(temperature)
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="sum") / student.shape[0]
    return kl * (t * t)

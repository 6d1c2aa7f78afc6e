"""`TextTeacherKL`: distil the language model reading the transcript into the model hearing the audio
(Ultravox's route to instruction following from audio)."""

from __future__ import annotations

import torch

from recipes.common.settings import check_float
from recipes.data.text_twin import TEXT_TWIN_KEY
from recipes.losses.base import Loss
from recipes.losses.teacher import distillation_kl, response_logits, teacher_logits


class TextTeacherKL(Loss):
    """``weight * T^2 * KL(teacher || student) + ce_weight * cross-entropy`` on the response tokens.

    The teacher is the same model, frozen (no gradient, eval mode; in stage 2 with the LoRA adapters
    disabled), run on the sample's text twin: its transcript in place of the audio span (`recipes.data.text_twin`).
    The student is the training forward with the audio. Their next-token distributions at the response
    positions are matched after softening both by ``temperature``.

    Args:
        temperature: > 0; 1 matches the plain distributions, higher weighs the teacher's runner-up tokens more.
        weight: >= 0, on the KL term.
        ce_weight: >= 0, on the usual cross-entropy to the reference response (0: distillation alone).
    """

    needs_transcript = True
    needs_full_logits = True  # response positions of the student and of its text twin are matched in (B, L, V)

    def __init__(self, temperature: float = 1.0, weight: float = 1.0, ce_weight: float = 1.0):
        self.temperature = check_float("TextTeacherKL temperature", temperature, 0.0, low_open=True)
        self.weight = check_float("TextTeacherKL weight", weight, 0.0)
        self.ce_weight = check_float("TextTeacherKL ce_weight", ce_weight, 0.0)
        if self.weight == 0 and self.ce_weight == 0:
            raise ValueError("TextTeacherKL weight and ce_weight are both 0: nothing would be trained")

    def init_args(self) -> dict:
        return {"temperature": self.temperature, "weight": self.weight, "ce_weight": self.ce_weight}

    def __call__(self, module, batch: dict, outputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if TEXT_TWIN_KEY not in batch:
            raise ValueError(
                "TextTeacherKL needs batches with a text twin (batch['text_twin']): AudioShardDataModule builds "
                "them when the module's loss needs transcripts; with your own loader use "
                "AudioCollator(processor, text_twin=True)"
            )
        teacher, teacher_targets = response_logits(teacher_logits(module, batch), batch[TEXT_TWIN_KEY]["labels"])
        student, targets = response_logits(outputs.logits, batch["labels"])
        if not torch.equal(targets, teacher_targets):
            raise ValueError("the text twin's response tokens differ from the batch's: the twin is not this batch's")
        kl = distillation_kl(student, teacher, self.temperature)
        loss, logs = self.weight * kl, {"kl": kl.detach()}
        if self.ce_weight:
            if outputs.loss is None:
                raise ValueError("TextTeacherKL with ce_weight > 0 needs the forward's loss: the batch has no labels")
            loss = loss + self.ce_weight * outputs.loss
            logs["ce"] = outputs.loss.detach()
        return loss, logs

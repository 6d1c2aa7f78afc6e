"""Training losses: the seam between a batch's forward and the number the optimizer minimises.

A loss is a class, chosen in the recipe YAML by its import path like any jsonargparse class (no registry)::

    model:
      loss:
        class_path: recipes.losses.TextTeacherKL
        init_args: {temperature: 2.0, weight: 1.0, ce_weight: 1.0}

and called by `recipes.training.module.AudioVLMLightningModule.training_step` as ``loss, logs = loss_fn(module, batch,
outputs)`` (``outputs``: the student forward's, with ``.loss`` and ``.logits``); each entry of ``logs`` is logged
as ``train/<name>``. The default is `CrossEntropy` (the model's own next-token loss, as before the seam). A new
loss is one file here subclassing `Loss` plus its import line below; a loss that reads each sample's transcript
sets ``needs_transcript = True`` and the data module then builds text twins (`recipes.data.text_twin`).
"""

from recipes.losses.base import Loss, build_loss
from recipes.losses.cross_entropy import CrossEntropy
from recipes.losses.text_teacher_kl import TextTeacherKL

__all__ = ["CrossEntropy", "Loss", "TextTeacherKL", "build_loss"]

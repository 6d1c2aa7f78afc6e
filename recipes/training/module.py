"""Two-stage training of the audio adapter with Lightning: `AudioVLMLightningModule`.

Stage 1 trains the ``audio_projector`` (every tensor of it, whatever its type) and the three new audio-token
embedding rows (``<|audio_bos|>``, ``<|AUDIO|>``, ``<|audio_eos|>``, as a float32 delta: `recipes.training.token_rows`);
the language model, the vision tower and the Whisper encoder stay frozen.

Stage 2 adds LoRA (peft; r 8, alpha 16, dropout 0.05 by default) on the q/k/v/o projections of the LANGUAGE
MODEL only (the regex never matches the Whisper encoder's ``q_proj``/``out_proj`` or the vision tower's
``qkv``/``proj``) and keeps the projector trainable; it starts from the stage-1 output (``init_from``).

What each stage writes (`AudioVLMLightningModule.save_trained`, also called at the end of ``fit`` when
``output_dir`` is set, and by a resume that finds the outputs missing), as a whole folder renamed into place::

    output_dir/projector.safetensors   projector state dict + the 3 audio-token rows (merged) + their ids
    output_dir/adapter/                stage 2: the peft LoRA adapter (save_pretrained)
    output_dir/training_spec.json      how to rebuild the base model (`recipes.training.model_spec.ModelSpec` fields)
    output_dir/audio_vlm_config.json   the model config (a record; export checks it)
    output_dir/<processor files>       AudioVLMProcessor.save_pretrained

Resuming: checkpoints hold only the trainable tensors (+ optimizer/scheduler state) and the state of the
`recipes.training.resume.ExactResume` callback (data position, RNG and VLAT states per rank), which every run gets
from `configure_callbacks`: a resumed run continues the same loss curve as an uninterrupted one.

Faults: every setting is checked before the model is built; the output and checkpoint folders are checked for
writability and overlap before the first step, and what a killed run left there is removed
(`recipes.training.run_files`); a checkpoint of another base model (its `ModelSpec` is stored in it) is refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch

from audio_adapter.encoders.output_cache import cache_encoder_outputs
from recipes.common.progress import ProgressLog
from recipes.common.settings import check_float, check_int
from recipes.data.collate import model_inputs
from recipes.losses import Loss, build_loss
from recipes.training.label_logits import accuracy_at_labels, column_major_grad, forward_at_labels, token_accuracy
from recipes.training.model_spec import ModelSpec, quantization_config
from recipes.training.optim import adamw_with_schedule, check_optimizer_settings
from recipes.training.projector_file import (
    PROJECTOR_FILE,
    audio_token_ids,
    load_projector_file,
    projector_type,
    save_projector_file,
)
from recipes.training.resume import ExactResume
from recipes.training.run_files import check_run_dirs, check_trainer_folders, clean_run_leftovers, write_dir_atomically
from recipes.training.token_rows import AudioTokenRows

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
SPEC_FILE = "training_spec.json"
CONFIG_FILE = "audio_vlm_config.json"
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
PROJECTOR_PARAM = "audio_projector."  # in every name of a projector tensor (plain or under peft's prefixes)


def lora_target_regex(targets: Sequence[str] = DEFAULT_LORA_TARGETS) -> str:
    """A peft ``target_modules`` regex (full match) for the language model's attention projections only."""
    targets = list(targets)
    if not targets or not all(isinstance(t, str) and t.isidentifier() for t in targets):
        raise ValueError(
            f"lora_targets must be non-empty module names such as {list(DEFAULT_LORA_TARGETS)}, got {targets}"
        )
    return r"model\.language_model\.layers\.\d+\.self_attn\.(" + "|".join(targets) + ")"


def _lora_settings(r: int, alpha: int, dropout: float, targets) -> dict:
    return {"r": int(r), "alpha": int(alpha), "dropout": float(dropout), "targets": list(targets)}


def _check_settings(args: dict) -> None:
    """Refuse bad training settings (name and value in the error) before anything is built."""
    if args["stage"] not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {args['stage']!r}")
    if args["quantization"] is not None and args["stage"] != 2:
        raise ValueError(
            "quantization (QLoRA) is a stage-2 option: stage 1 trains the projector of a full-precision base"
        )
    check_int("lora_r", args["lora_r"], 1)
    check_int("lora_alpha", args["lora_alpha"], 1)
    check_float("lora_dropout", args["lora_dropout"], 0.0, 1.0, high_open=True)
    check_optimizer_settings(
        *(args[k] for k in ("lr", "weight_decay", "betas", "eps", "scheduler", "warmup_steps", "min_lr_ratio"))
    )
    check_int("vlat_seed", args["vlat_seed"], optional=True)


def _build(spec: ModelSpec, model_and_processor: tuple | None) -> tuple:
    """(model, processor): ``model_and_processor`` as given (the spec then says "prebuilt"), else built."""
    if model_and_processor is None:
        return spec.build()
    quantization_config(spec.quantization)  # the same clear refusal as a build
    spec.model = "prebuilt"
    return model_and_processor


class AudioVLMLightningModule(pl.LightningModule):
    """Stage 1 / stage 2 training of `AudioVLMForConditionalGeneration` (see the module docstring).

    Args:
        model, tiny_overrides, tiny_seed, vlm, whisper, audio_pool_stride, projector_type,
            projector_stack_factor, context_extension, dtype, quantization: the base model, as the fields of
            `recipes.training.model_spec.ModelSpec` (``dtype``: the frozen base weights; trainable tensors are always
            kept in float32; ``quantization: 4bit`` is QLoRA, stage 2 on CUDA only).
        stage: 1 (projector + audio-token rows) or 2 (LoRA on the LM's q/k/v/o + projector).
        init_from: a stage output directory (or its ``projector.safetensors``) to start from; stage 2 needs it
            unless you deliberately start from a fresh projector.
        lora_r / lora_alpha / lora_dropout / lora_targets: LoRA settings (stage 2).
        lr / weight_decay / betas / eps: AdamW over the trainable tensors only (weight decay never applies to
            the token-row delta). lr 5e-5 is the paper's (App. D.1).
        scheduler: ``constant``, ``linear`` or ``cosine`` (decay to ``min_lr_ratio * lr`` at ``max_steps``),
            after ``warmup_steps`` of linear warm-up. Stepped per optimizer step (`recipes.training.optim`).
        gradient_checkpointing: non-reentrant activation checkpointing in the language model.
        vlat / vlat_strategy / vlat_seed: VLAT during training (defaults: the model's context-extension
            settings). Each training sample gets ``virtual_audio_tokens = base_audio_tokens * factor``. Never
            at validation.
        output_dir: where `save_trained` writes at the end of ``fit`` (rank 0); None: nothing is written.
        encoder_cache: remember the frozen encoder's output per window
            (`audio_adapter.encoders.output_cache`): a clip seen again skips the encoder; the loss is unchanged.
        loss: the training loss, a `recipes.losses.Loss` (YAML ``class_path``); default `CrossEntropy`.
            Validation always logs the cross-entropy (``val/loss``), comparable across losses.
        _model_and_processor: a ready ``(model, processor)`` pair (tests, notebooks); not settable from YAML.
    """

    def __init__(
        self,
        model: str = "tiny",
        tiny_overrides: dict | None = None,
        tiny_seed: int = 0,
        vlm: str | None = None,
        whisper: str | None = None,
        audio_pool_stride: int = 1,
        projector_type: str = "linear",
        projector_stack_factor: int = 1,
        context_extension: dict | None = None,
        dtype: str = "float32",
        quantization: str | None = None,
        stage: int = 1,
        init_from: str | None = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_targets: list[str] = list(DEFAULT_LORA_TARGETS),
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        vlat: bool | None = None,
        vlat_strategy: str | None = None,
        vlat_seed: int | None = None,
        output_dir: str | None = None,
        encoder_cache: bool = False,
        loss: Loss | None = None,
        _model_and_processor: tuple | None = None,
    ):
        super().__init__()
        _check_settings(locals())
        self.loss_fn = build_loss(loss)  # a dict spec (hparams of a checkpoint) is accepted too
        spec = ModelSpec(
            model, tiny_overrides, tiny_seed, vlm, whisper, audio_pool_stride, projector_type,
            projector_stack_factor, context_extension, dtype, quantization,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["_model_and_processor", "loss"])
        self.hparams["loss"] = self.loss_fn.spec()  # plain data: checkpoints load with weights_only
        self.stage, self.output_dir, self.init_from = int(stage), output_dir, init_from
        self.lora_settings = _lora_settings(lora_r, lora_alpha, lora_dropout, lora_targets)
        net, self.processor = _build(spec, _model_and_processor)
        self.spec = spec
        self._prepare_base(net, init_from, gradient_checkpointing)
        self.audio_token_rows: AudioTokenRows | None = None
        self.model = self._stage1(net) if self.stage == 1 else self._stage2(net, quantization, gradient_checkpointing)
        self.strict_loading = False  # checkpoints hold the trainable tensors only
        self._check_frozen()
        if encoder_cache:
            cache_encoder_outputs(self.audio_vlm)
        self._setup_vlat(vlat, vlat_strategy, vlat_seed)
        self._t_batch: float | None = None
        self.train()

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _prepare_base(net, init_from, gradient_checkpointing: bool) -> None:
        """Freeze everything, load the starting projector (and token rows), switch on activation checkpointing."""
        net.requires_grad_(False)
        if init_from is not None:
            load_projector_file(net, init_from)
        if gradient_checkpointing:
            net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def _stage1(self, net):
        net.audio_projector.float().requires_grad_(True)
        self.audio_token_rows = AudioTokenRows(audio_token_ids(net.config), net.config.text_config.hidden_size)
        self.audio_token_rows.attach(net.get_input_embeddings())
        return net

    def _stage2(self, net, quantization: str | None, gradient_checkpointing: bool):
        from peft import LoraConfig, get_peft_model

        if quantization is not None:
            from peft import prepare_model_for_kbit_training

            net = prepare_model_for_kbit_training(
                net,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
            net.requires_grad_(False)
        lora = self.lora_settings
        config = LoraConfig(
            r=int(lora["r"]),
            lora_alpha=int(lora["alpha"]),
            lora_dropout=float(lora["dropout"]),
            target_modules=lora_target_regex(lora["targets"]),
            bias="none",
        )
        peft_model = get_peft_model(net, config)
        net.audio_projector.float().requires_grad_(True)
        for name, p in peft_model.named_parameters():
            if "lora_" in name and p.dtype != torch.float32:
                p.data = p.data.float()
        return peft_model

    def _setup_vlat(self, vlat: bool | None, strategy: str | None, seed: int | None) -> None:
        ext = self.audio_vlm.context_extension
        self.vlat = ext.vlat if vlat is None else bool(vlat)
        self.vlat_strategy = ext.vlat_strategy if strategy is None else strategy
        self.vlat_seed = ext.vlat_seed if seed is None else int(seed)
        self.vlat_sampler = None
        if self.vlat:
            from extension.vlat import VirtualLengthSampler

            self.vlat_sampler = VirtualLengthSampler(self.vlat_strategy, seed=self.vlat_seed)

    @property
    def audio_vlm(self):
        """The underlying `AudioVLMForConditionalGeneration` (unwrapped from peft in stage 2)."""
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def _check_frozen(self) -> None:
        names = self.trainable_parameter_names()
        if not names:
            raise RuntimeError("no trainable parameters")
        bad = [n for n in names if "audio_tower" in n or ".visual." in n or (self.stage == 1 and "lora_" in n)]
        if self.stage == 1:
            bad += [
                n for n in names if not (n.startswith("model." + PROJECTOR_PARAM) or n.startswith("audio_token_rows."))
            ]
        else:
            bad += [n for n in names if "lora_" not in n and PROJECTOR_PARAM not in n]
            bad += [n for n in names if "lora_" in n and ".language_model.layers." not in n]
        if bad:
            raise RuntimeError(f"stage {self.stage}: unexpected trainable parameters {sorted(set(bad))[:10]}")

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen feature extractors stay in eval mode (no dropout / layerdrop), whatever Lightning asks
        base = self.audio_vlm
        base.audio_tower.eval()
        base.model.visual.eval()
        return self

    def configure_callbacks(self):
        return [ExactResume(), ProgressLog()]

    # ------------------------------------------------------------------ steps
    def setup(self, stage: str) -> None:
        if stage == "fit" and self._trainer is not None:
            # before the first step (and before a checkpoint is restored): not after hours of training
            dirs = check_trainer_folders(self.trainer, self.output_dir, self.init_from)  # every rank: no file touched
            if self.trainer.is_global_zero:
                check_run_dirs(self.output_dir, dirs, is_ours=lambda out: (out / SPEC_FILE).is_file())
        if self.vlat and self.global_rank:
            from extension.vlat import VirtualLengthSampler

            # each rank draws its own factors (rank 0 keeps the configured seed)
            self.vlat_sampler = VirtualLengthSampler(
                self.vlat_strategy, seed=self.vlat_seed + 1_000_003 * self.global_rank
            )

    def forward(self, **inputs):
        return self.model(**inputs)

    def _virtual_audio_tokens(self, batch_size: int) -> torch.Tensor:
        return self.vlat_sampler.virtual_lengths(self.audio_vlm.base_audio_tokens, batch_size).to(self.device)

    def training_step(self, batch, batch_idx):
        inputs = model_inputs(batch)
        batch_size = int(inputs["input_ids"].shape[0])
        if self.vlat:
            inputs["virtual_audio_tokens"] = self._virtual_audio_tokens(batch_size)
        if self.loss_fn.needs_full_logits:
            out = self.model(**inputs, use_cache=False)
            out.logits = column_major_grad(out.logits)
            acc, n_tokens = token_accuracy(out.logits.detach(), inputs["labels"])
        else:  # logits at label positions only (`recipes.training.label_logits`): same loss, a fraction of the cost
            ce, logits, targets, out = forward_at_labels(self.model, {**inputs, "use_cache": False})
            out.loss = ce
            acc, n_tokens = accuracy_at_labels(logits.detach(), targets)
        loss, logs = self.loss_fn(self, batch, out)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        if n_tokens:
            self.log("train/token_acc", acc, prog_bar=True, batch_size=batch_size)
        if self.trainer is not None and self.trainer.optimizers:
            self.log(
                "train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False, batch_size=batch_size
            )
        return loss

    def validation_step(self, batch, batch_idx):
        if "labels" not in batch:
            raise ValueError("validation needs teacher-forced batches with labels (data: val_for_generation: false)")
        inputs = model_inputs(batch)  # no VLAT at evaluation
        loss, logits, targets, _ = forward_at_labels(self.model, {**inputs, "use_cache": False})
        batch_size = int(inputs["input_ids"].shape[0])
        acc, n_tokens = accuracy_at_labels(logits, targets)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=True)
        if n_tokens:
            self.log("val/token_acc", acc, batch_size=batch_size, sync_dist=True)
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._t_batch is None or not isinstance(batch, dict) or "audio_token_counts" not in batch:
            return
        seconds = max(time.perf_counter() - self._t_batch, 1e-9)
        tokens = float(batch["audio_token_counts"].sum())
        self.log(
            "train/audio_tokens_per_s", tokens / seconds, prog_bar=True, batch_size=len(batch["audio_token_counts"])
        )

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_with_schedule(
            self.named_parameters(),
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            betas=hp.betas,
            eps=hp.eps,
            scheduler=hp.scheduler,
            warmup_steps=hp.warmup_steps,
            min_lr_ratio=hp.min_lr_ratio,
            total_steps=self.trainer.max_steps if self._trainer is not None else -1,
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = set(self.trainable_parameter_names())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["audio_vlm"] = dict(stage=self.stage, trainable_keys=sorted(trainable), spec=self.spec.to_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("audio_vlm")
        if state is None:
            raise ValueError("not a checkpoint of AudioVLMLightningModule (no 'audio_vlm' entry)")
        if int(state["stage"]) != self.stage:
            raise ValueError(f"checkpoint is from stage {state['stage']}, this module is stage {self.stage}")
        self.spec.check_same_base(state.get("spec"))
        missing = sorted(set(self.trainable_parameter_names()) - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"checkpoint lacks trainable tensors {missing[:5]} ({len(missing)} total): different settings?"
            )

    # ------------------------------------------------------------------ outputs
    def on_fit_start(self) -> None:
        self._outputs_written = False
        if self.trainer.is_global_zero:  # what a killed run left behind (checkpoint state is restored by now)
            clean_run_leftovers(self.output_dir, self.trainer.checkpoint_callbacks, self.trainer.ckpt_path)

    def on_train_end(self) -> None:
        self._write_outputs()

    def on_fit_end(self) -> None:
        # A resume that finds max_steps already reached trains nothing and never calls on_train_end: outputs
        # that a kill destroyed while they were written are written here.
        if not getattr(self, "_outputs_written", False):
            self._write_outputs()

    def _write_outputs(self) -> None:
        if self.output_dir:
            if self.trainer.is_global_zero:
                self.save_trained(self.output_dir)
            self.trainer.strategy.barrier("save_trained")
        self._outputs_written = True

    @torch.no_grad()
    def token_rows(self) -> torch.Tensor:
        """(3, hidden) float32 rows of the audio tokens as the model sees them now (delta merged)."""
        emb = self.audio_vlm.get_input_embeddings().weight
        if self.audio_token_rows is not None:
            return self.audio_token_rows.merged_rows(emb)
        return emb[audio_token_ids(self.audio_vlm.config)].float()

    def training_spec(self) -> dict:
        return {
            "format": 1,
            "stage": self.stage,
            **self.spec.to_dict(),
            "init_from": str(self.init_from) if self.init_from is not None else None,
            "lora": self.lora_settings if self.stage == 2 else None,
            "vlat": {"enabled": self.vlat, "strategy": self.vlat_strategy, "seed": self.vlat_seed},
        }

    def save_trained(self, output_dir) -> Path:
        """Write what this stage trained (see the module docstring) plus the processor, config and spec, as a
        whole folder: written next to ``output_dir``, then renamed into place (a kill or an error midway leaves
        the previous outputs, or none; `recipes.training.run_files.write_dir_atomically`)."""
        base = self.audio_vlm

        def write(out: Path) -> None:
            ids, kind = audio_token_ids(base.config), projector_type(base.config)
            save_projector_file(out / PROJECTOR_FILE, base.audio_projector, ids, self.token_rows(), self.stage, kind)
            if self.stage == 2:
                self.model.save_pretrained(str(out / ADAPTER_DIR), save_embedding_layers=False)
            self.processor.save_pretrained(out)
            base.config.to_json_file(str(out / CONFIG_FILE))
            (out / SPEC_FILE).write_text(json.dumps(self.training_spec(), indent=2))

        out = write_dir_atomically(output_dir, write, is_ours=lambda d: (d / SPEC_FILE).is_file())
        logger.info("stage %d outputs written to %s", self.stage, out)
        return out

"""Two-stage training of the audio adapter with Lightning.

Stage 1 trains the ``audio_projector`` and the three new audio-token embedding rows (``<|audio_bos|>``,
``<|AUDIO|>``, ``<|audio_eos|>``); the language model, the vision tower and the Whisper encoder stay frozen.
The token rows are trained as a small separate delta (3 x hidden) added to the frozen embedding's output, so
(a) every other embedding row is bit-identical by construction, (b) neither the gradient nor the optimizer
state of the 152,064-row embedding is ever allocated (about 6.5 GB in float32 for the 7B model) and (c) the
delta is kept in float32 even when the base runs in bfloat16. It is merged into the rows on save.

Stage 2 adds LoRA (peft; r 8, alpha 16, dropout 0.05 by default) on the q/k/v/o projections of the LANGUAGE
MODEL only (the regex never matches the Whisper encoder's ``q_proj``/``out_proj`` or the vision tower's
``qkv``/``proj``) and keeps the projector trainable; it starts from the stage-1 output (``init_from``).

What each stage writes (`AudioVLMLightningModule.save_trained`, also called at the end of ``fit`` when
``output_dir`` is set, and by a resume that finds the outputs missing), as a whole folder renamed into place::

    output_dir/projector.safetensors   projector weight + the 3 audio-token rows (merged) + their ids
    output_dir/adapter/                stage 2: the peft LoRA adapter (save_pretrained)
    output_dir/training_spec.json      how to rebuild the base model (scripts/export.py reads it)
    output_dir/audio_vlm_config.json   the model config (a record; export checks it)
    output_dir/<processor files>       AudioVLMProcessor.save_pretrained

Resuming: checkpoints hold only the trainable tensors (+ optimizer/scheduler state), the global RNG states and
the VLAT sampler state of every rank, and the data position (epoch, batches consumed in it, and per rank where
each data worker's stream stood after them). On resume the data module fast-forwards its shard stream to that
position (`AudioShardDataModule.resume_at`): the workers pass over the consumed raw samples without decoding
them (`recipes.data.resume_plan`), so the run continues the same loss curve as an uninterrupted one.

Faults: every numeric setting is checked before the model is built; the output and checkpoint folders are
checked for writability before the first step, and what a killed run left there is removed
(`recipes.run_files`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from recipes.collate import IGNORE_INDEX, model_inputs
from recipes.data import record_stream_position
from recipes.run_files import check_run_dirs, clean_run_leftovers, write_dir_atomically
from recipes.settings import check_float, check_int

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
SPEC_FILE = "training_spec.json"
CONFIG_FILE = "audio_vlm_config.json"
PROJECTOR_KEY = "audio_projector.weight"
TOKEN_ROWS_KEY = "audio_token_embeddings"
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
SCHEDULERS = ("constant", "linear", "cosine")
QUANTIZATIONS = ("4bit",)
# Frozen modules never quantized for QLoRA: the audio path (loaded separately / trained) and the vision tower.
QLORA_SKIP_MODULES = ["lm_head", "audio_tower", "audio_projector", "visual"]


# ============================================================================================ model building
def quantization_config(quantization: str | None):
    """``BitsAndBytesConfig`` for QLoRA, or None. Raises a clear error where 4-bit cannot run (no CUDA, no
    bitsandbytes) instead of failing deep inside transformers."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS} or null, got {quantization!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"quantization={quantization!r} (QLoRA) needs a CUDA GPU: bitsandbytes 4-bit layers do not run on CPU "
            "and torch.cuda.is_available() is False. Use quantization: null (plain LoRA) on this machine."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"quantization={quantization!r} (QLoRA) needs bitsandbytes, which is not importable ({exc}); "
            "install the GPU extra: pip install -e '.[gpu]'"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(QLORA_SKIP_MODULES),
    )


def build_model_and_processor(
    model: str = "tiny",
    *,
    tiny_overrides: dict | None = None,
    tiny_seed: int = 0,
    vlm: str | None = None,
    whisper: str | None = None,
    audio_pool_stride: int = 1,
    context_extension: dict | None = None,
    dtype: str = "float32",
    quantization: str | None = None,
):
    """(AudioVLMForConditionalGeneration, AudioVLMProcessor) from a spec that YAML can hold.

    ``model``: ``"tiny"`` (`audio_adapter.testing.tiny_model_and_processor` with ``tiny_seed`` and
    ``tiny_overrides``), ``"pretrained"`` (`audio_adapter.load_pretrained_parts` from ``vlm`` + ``whisper``, hub
    ids or local folders) or a directory written by ``save_pretrained`` (model + processor, e.g. an export).
    """
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor
    from extension import AudioContextExtension

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    bnb = quantization_config(quantization)  # fails first, with the clear reason, on CPU
    if model == "tiny":
        if bnb is not None:
            raise ValueError("quantization applies to real checkpoints (model: pretrained or a directory), not 'tiny'")
        from audio_adapter.testing import tiny_model_and_processor

        net, processor = tiny_model_and_processor(seed=int(tiny_seed), **dict(tiny_overrides or {}))
        net = net.to(torch_dtype)
    elif model == "pretrained":
        if not vlm or not whisper:
            raise ValueError(
                "model: pretrained needs both vlm (a Qwen2-VL checkpoint) and whisper (a Whisper checkpoint)"
            )
        from audio_adapter import load_pretrained_parts

        extra = {"model_kwargs": {"quantization_config": bnb}} if bnb is not None else {}
        processor = AudioVLMProcessor.from_parts(vlm, whisper, audio_pool_stride=audio_pool_stride)
        net = load_pretrained_parts(  # the processor's tokenizer: the 151k-token tokenizer is read once, not twice
            vlm,
            whisper,
            tokenizer=processor.tokenizer,
            audio_pool_stride=audio_pool_stride,
            context_extension=context_extension,
            dtype=torch_dtype,
            **extra,
        )
    else:
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model={model!r}: expected 'tiny', 'pretrained' or a directory written by save_pretrained "
                f"(no {path / 'config.json'})"
            )
        kwargs = {"quantization_config": bnb} if bnb is not None else {}
        net = AudioVLMForConditionalGeneration.from_pretrained(str(path), dtype=torch_dtype, **kwargs)
        processor = AudioVLMProcessor.from_pretrained(path)
    if context_extension:
        net.set_context_extension(AudioContextExtension.from_dict(dict(context_extension)))
    return net, processor


def audio_token_ids(config) -> list[int]:
    return [int(config.audio_bos_token_id), int(config.audio_token_id), int(config.audio_eos_token_id)]


def lora_target_regex(targets: Sequence[str] = DEFAULT_LORA_TARGETS) -> str:
    """A peft ``target_modules`` regex (full match) for the language model's attention projections only."""
    targets = list(targets)
    if not targets or not all(isinstance(t, str) and t.isidentifier() for t in targets):
        raise ValueError(
            f"lora_targets must be non-empty module names such as {list(DEFAULT_LORA_TARGETS)}, got {targets}"
        )
    return r"model\.language_model\.layers\.\d+\.self_attn\.(" + "|".join(targets) + ")"


# ============================================================================================ projector file
def save_projector_file(
    path, projector_weight: torch.Tensor, token_ids: Sequence[int], token_rows: torch.Tensor, stage: int
) -> None:
    from safetensors.torch import save_file

    tensors = {
        PROJECTOR_KEY: projector_weight.detach().float().cpu().contiguous(),
        TOKEN_ROWS_KEY: token_rows.detach().float().cpu().contiguous(),
    }
    metadata = {
        "format": "audio_vlm_projector/1",
        "audio_token_ids": json.dumps(list(map(int, token_ids))),
        "stage": str(stage),
    }
    save_file(tensors, str(path), metadata=metadata)


def read_projector_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / PROJECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: init_from must be a stage output directory or its {PROJECTOR_FILE}")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    return tensors, metadata


@torch.no_grad()
def load_projector_file(model, path) -> None:
    """Put a saved projector (and audio-token rows) into ``model`` (an `AudioVLMForConditionalGeneration`)."""
    tensors, metadata = read_projector_file(path)
    proj = model.audio_projector.weight
    if PROJECTOR_KEY not in tensors or tensors[PROJECTOR_KEY].shape != proj.shape:
        got = tuple(tensors[PROJECTOR_KEY].shape) if PROJECTOR_KEY in tensors else None
        raise ValueError(f"{path}: projector weight {got} does not fit this model's projector {tuple(proj.shape)}")
    proj.copy_(tensors[PROJECTOR_KEY].to(proj.dtype))
    if TOKEN_ROWS_KEY in tensors:
        ids = json.loads(metadata.get("audio_token_ids", "null") or "null")
        expected = audio_token_ids(model.config)
        if ids != expected:
            raise ValueError(f"{path}: audio token ids {ids} differ from this model's {expected}")
        emb = model.get_input_embeddings().weight
        rows = tensors[TOKEN_ROWS_KEY]
        if rows.shape != (len(expected), emb.shape[1]):
            raise ValueError(
                f"{path}: audio token rows {tuple(rows.shape)} do not fit the embedding {tuple(emb.shape)}"
            )
        emb[expected] = rows.to(emb.dtype)


# ============================================================================================ token-row delta
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


# ============================================================================================ RNG helpers
def _rng_state() -> dict[str, Any]:
    """Global RNG states in types that ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list outside torch.distributed)."""
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token accuracy on label positions (labels aligned with input_ids; the model shifts)."""
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        return torch.zeros((), device=logits.device), 0
    pred = logits[:, :-1].argmax(-1)
    return (pred[mask] == target[mask]).float().mean(), n


def _check_numeric_settings(args: dict) -> None:
    """Refuse out-of-range numeric settings of `AudioVLMLightningModule` (name and value in the error), before
    anything is built: lr 0 or a negative warm-up would otherwise train (or not) without a word."""
    check_int("tiny_seed", args["tiny_seed"])
    check_int("audio_pool_stride", args["audio_pool_stride"], 1)
    check_int("lora_r", args["lora_r"], 1)
    check_int("lora_alpha", args["lora_alpha"], 1)
    check_float("lora_dropout", args["lora_dropout"], 0.0, 1.0, high_open=True)
    check_float("lr", args["lr"], 0.0, low_open=True)
    check_float("weight_decay", args["weight_decay"], 0.0)
    betas = args["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    for beta in betas:
        try:
            check_float("betas", beta, 0.0, 1.0, high_open=True)
        except ValueError:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
    check_float("eps", args["eps"], 0.0, low_open=True)
    check_int("warmup_steps", args["warmup_steps"], 0)
    check_float("min_lr_ratio", args["min_lr_ratio"], 0.0, 1.0)
    check_int("vlat_seed", args["vlat_seed"], optional=True)


# ============================================================================================ LightningModule
class AudioVLMLightningModule(pl.LightningModule):
    """Stage 1 / stage 2 training of `AudioVLMForConditionalGeneration` (see the module docstring).

    Args:
        model: ``"tiny"``, ``"pretrained"`` (with ``vlm`` + ``whisper``) or a ``save_pretrained`` directory.
        tiny_overrides / tiny_seed: settings of the tiny model (`audio_adapter.testing.TINY_DEFAULTS`).
        vlm / whisper: Qwen2-VL and Whisper checkpoints for ``model: pretrained``.
        audio_pool_stride: encoder frames averaged per audio token (pretrained only; tiny: ``tiny_overrides``).
        context_extension: `extension.AudioContextExtension` settings applied to the model.
        dtype: dtype of the (frozen) base weights; trainable tensors are always kept in float32.
        quantization: ``"4bit"`` loads the base with bitsandbytes NF4 for QLoRA (stage 2, CUDA only).
        stage: 1 (projector + audio-token rows) or 2 (LoRA on the LM's q/k/v/o + projector).
        init_from: a stage output directory (or its ``projector.safetensors``) to start from; stage 2 needs it
            unless you deliberately start from a fresh projector.
        lora_r / lora_alpha / lora_dropout / lora_targets: LoRA settings (stage 2).
        lr / weight_decay / betas / eps: AdamW over the trainable tensors only (weight decay never applies to
            the token-row delta). lr 5e-5 is the paper's (App. D.1).
        scheduler: ``constant``, ``linear`` or ``cosine`` (decay to ``min_lr_ratio * lr`` at ``max_steps``),
            after ``warmup_steps`` of linear warm-up. Stepped per optimizer step.
        gradient_checkpointing: non-reentrant activation checkpointing in the language model.
        vlat / vlat_strategy / vlat_seed: VLAT during training (defaults: the model's context-extension
            settings). Each training sample gets ``virtual_audio_tokens = base_audio_tokens * factor``. Never
            at validation.
        output_dir: where `save_trained` writes at the end of ``fit`` (rank 0); None: nothing is written.
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
        _model_and_processor: tuple | None = None,
    ):
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if quantization is not None and stage != 2:
            raise ValueError(
                "quantization (QLoRA) is a stage-2 option: stage 1 trains the projector of a full-precision base"
            )
        _check_numeric_settings(locals())
        self.save_hyperparameters(ignore=["_model_and_processor"])
        self.stage = int(stage)
        self.spec = {
            "model": model,
            "tiny_overrides": dict(tiny_overrides or {}),
            "tiny_seed": int(tiny_seed),
            "vlm": vlm,
            "whisper": whisper,
            "audio_pool_stride": int(audio_pool_stride),
            "context_extension": dict(context_extension) if context_extension else None,
            "dtype": dtype,
            "quantization": quantization,
        }
        if _model_and_processor is not None:
            net, processor = _model_and_processor
            if quantization is not None:
                quantization_config(quantization)
            self.spec["model"] = "prebuilt"
        else:
            net, processor = build_model_and_processor(**self.spec)
        self.processor = processor
        self.output_dir = output_dir
        self.init_from = init_from
        self.lora_settings = {
            "r": int(lora_r),
            "alpha": int(lora_alpha),
            "dropout": float(lora_dropout),
            "targets": list(lora_targets),
        }

        net.requires_grad_(False)
        if init_from is not None:
            load_projector_file(net, init_from)
        if gradient_checkpointing:
            net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.audio_token_rows: AudioTokenRows | None = None
        if self.stage == 1:
            net.audio_projector.float().requires_grad_(True)
            self.audio_token_rows = AudioTokenRows(audio_token_ids(net.config), net.config.text_config.hidden_size)
            self.audio_token_rows.attach(net.get_input_embeddings())
            self.model = net
        else:
            from peft import LoraConfig, get_peft_model

            if quantization is not None:
                from peft import prepare_model_for_kbit_training

                net = prepare_model_for_kbit_training(
                    net,
                    use_gradient_checkpointing=gradient_checkpointing,
                    gradient_checkpointing_kwargs={"use_reentrant": False},
                )
                net.requires_grad_(False)
            lora = LoraConfig(
                r=int(lora_r),
                lora_alpha=int(lora_alpha),
                lora_dropout=float(lora_dropout),
                target_modules=lora_target_regex(lora_targets),
                bias="none",
            )
            self.model = get_peft_model(net, lora)
            self.audio_vlm.audio_projector.float().requires_grad_(True)
            for name, p in self.model.named_parameters():
                if "lora_" in name and p.dtype != torch.float32:
                    p.data = p.data.float()
        self.strict_loading = False  # checkpoints hold the trainable tensors only
        self._check_frozen()

        ext = self.audio_vlm.context_extension
        self.vlat = ext.vlat if vlat is None else bool(vlat)
        self.vlat_strategy = ext.vlat_strategy if vlat_strategy is None else vlat_strategy
        self.vlat_seed = ext.vlat_seed if vlat_seed is None else int(vlat_seed)
        self.vlat_sampler = None
        if self.vlat:
            from extension.vlat import VirtualLengthSampler

            self.vlat_sampler = VirtualLengthSampler(self.vlat_strategy, seed=self.vlat_seed)

        # resume bookkeeping
        self._position = (0, 0)  # (epoch, batches consumed in it) as a checkpoint taken now should record it
        self._epoch_batches = 0
        self._stream: dict = {}  # the epoch's consumed batches per data worker and their stream positions
        self._pending_rng: dict | None = None
        self._t_batch: float | None = None
        self.train()

    # ------------------------------------------------------------------ structure
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
                n for n in names if not (n.startswith("model.audio_projector.") or n.startswith("audio_token_rows."))
            ]
        else:
            bad += [n for n in names if "lora_" not in n and not n.endswith("audio_projector.weight")]
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

    # ------------------------------------------------------------------ steps
    def setup(self, stage: str) -> None:
        if stage == "fit" and self._trainer is not None and self.trainer.is_global_zero:
            # before the first step (and before a checkpoint is restored): not after hours of training
            dirs = [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
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
        out = self.model(**inputs, use_cache=False)
        loss = out.loss
        acc, n_tokens = token_accuracy(out.logits.detach(), inputs["labels"])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
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
        out = self.model(**inputs, use_cache=False)
        batch_size = int(inputs["input_ids"].shape[0])
        acc, n_tokens = token_accuracy(out.logits, inputs["labels"])
        self.log("val/loss", out.loss, prog_bar=True, batch_size=batch_size, sync_dist=True)
        if n_tokens:
            self.log("val/token_acc", acc, batch_size=batch_size, sync_dist=True)
        return out.loss

    def on_train_epoch_start(self) -> None:
        self._epoch_batches = 0
        self._stream = {}
        self._position = (self.current_epoch, 0)

    def on_train_batch_start(self, batch, batch_idx):
        if self._pending_rng is not None:  # first batch after a resume: continue the saved RNG streams
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        # Data position for checkpoints taken after this batch (callbacks save before the module's
        # on_train_batch_end runs, hence here). After the epoch's last batch the stream is exhausted: resume
        # at the start of the next epoch (Lightning continues there with the iterator it made at restart).
        self._epoch_batches += 1
        if isinstance(batch, dict) and batch.get("stream_position") is not None:
            record_stream_position(self._stream, batch["stream_position"])
        progress = getattr(getattr(self.trainer.fit_loop, "epoch_loop", None), "batch_progress", None)
        if progress is not None and progress.is_last_batch:
            self._position = (self.current_epoch + 1, 0)
        else:
            self._position = (self.current_epoch, self._epoch_batches)
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._t_batch is None or not isinstance(batch, dict) or "audio_token_counts" not in batch:
            return
        seconds = max(time.perf_counter() - self._t_batch, 1e-9)
        tokens = float(batch["audio_token_counts"].sum())
        self.log(
            "train/audio_tokens_per_s", tokens / seconds, prog_bar=True, batch_size=len(batch["audio_token_counts"])
        )

    def on_train_epoch_end(self) -> None:
        self._position = (self.current_epoch + 1, 0)  # a checkpoint taken now resumes at the next epoch's start

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.startswith("audio_token_rows.") or p.ndim < 2 else decay).append(p)
        groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        hp = self.hparams
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)
        total = self.trainer.max_steps if self._trainer is not None else -1
        if hp.scheduler != "constant" and (total is None or total <= 0):
            raise ValueError(f"scheduler={hp.scheduler!r} needs trainer.max_steps > 0 (the decay horizon)")
        warmup, kind, floor = int(hp.warmup_steps), hp.scheduler, float(hp.min_lr_ratio)

        def factor(step: int) -> float:
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            if kind == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            shape = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
            return floor + (1.0 - floor) * shape

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = set(self.trainable_parameter_names())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        per_rank = _all_gather(
            {
                "rng": _rng_state(),
                "vlat": self.vlat_sampler.state_dict() if self.vlat_sampler is not None else None,
                "stream": copy.deepcopy(self._stream) if self._position[1] else {},
            }
        )
        checkpoint["audio_vlm"] = {
            "stage": self.stage,
            "trainable_keys": sorted(trainable),
            "data_position": {"epoch": int(self._position[0]), "batches": int(self._position[1])},
            "per_rank": per_rank,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("audio_vlm")
        if state is None:
            raise ValueError("not a checkpoint of AudioVLMLightningModule (no 'audio_vlm' entry)")
        if int(state["stage"]) != self.stage:
            raise ValueError(f"checkpoint is from stage {state['stage']}, this module is stage {self.stage}")
        trainable = set(self.trainable_parameter_names())
        missing = sorted(trainable - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(
                f"checkpoint lacks trainable tensors {missing[:5]} ({len(missing)} total): different settings?"
            )
        per_rank = state.get("per_rank") or []
        rank = self.global_rank if self._trainer is not None else 0
        same_ranks = len(per_rank) == (self.trainer.world_size if self._trainer is not None else 1)
        if per_rank:
            if not same_ranks:
                logger.warning(
                    "checkpoint was written by %d ranks; RNG/VLAT states of rank 0 are reused", len(per_rank)
                )
            mine = per_rank[rank] if rank < len(per_rank) else per_rank[0]
            self._pending_rng = mine["rng"]
            if self.vlat_sampler is not None and mine.get("vlat") is not None:
                self.vlat_sampler.load_state_dict(mine["vlat"])
        position = state.get("data_position") or {"epoch": 0, "batches": 0}
        self._position = (int(position["epoch"]), int(position["batches"]))
        self._epoch_batches = self._position[1]
        # another rank count splits the shards differently: its stream positions mean nothing here
        self._stream = copy.deepcopy(mine.get("stream") or {}) if per_rank and same_ranks else {}
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "resume_at"):
            datamodule.resume_at(*self._position, stream=self._stream or None)
        elif self._position[1]:
            logger.warning(
                "resuming mid-epoch (%d batches into epoch %d) without a data module that can fast-forward: "
                "the data order will differ from an uninterrupted run",
                self._position[1],
                self._position[0],
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

    @torch.no_grad()
    def merge_token_rows(self) -> None:
        """Write the trained token rows into the embedding and zero the delta (same forward; used by export)."""
        if self.audio_token_rows is None:
            return
        emb = self.audio_vlm.get_input_embeddings().weight
        emb[audio_token_ids(self.audio_vlm.config)] = self.token_rows().to(emb.dtype)
        self.audio_token_rows.delta.zero_()

    def training_spec(self) -> dict:
        return {
            "format": 1,
            "stage": self.stage,
            **self.spec,
            "init_from": str(self.init_from) if self.init_from is not None else None,
            "lora": self.lora_settings if self.stage == 2 else None,
            "vlat": {"enabled": self.vlat, "strategy": self.vlat_strategy, "seed": self.vlat_seed},
        }

    def save_trained(self, output_dir) -> Path:
        """Write what this stage trained (see the module docstring) plus the processor, config and spec, as a
        whole folder: written next to ``output_dir``, then renamed into place (a kill or an error midway leaves
        the previous outputs, or none; `recipes.run_files.write_dir_atomically`)."""
        base = self.audio_vlm

        def write(out: Path) -> None:
            save_projector_file(
                out / PROJECTOR_FILE,
                base.audio_projector.weight,
                audio_token_ids(base.config),
                self.token_rows(),
                self.stage,
            )
            if self.stage == 2:
                self.model.save_pretrained(str(out / ADAPTER_DIR), save_embedding_layers=False)
            self.processor.save_pretrained(out)
            base.config.to_json_file(str(out / CONFIG_FILE))
            (out / SPEC_FILE).write_text(json.dumps(self.training_spec(), indent=2))

        out = write_dir_atomically(output_dir, write, is_ours=lambda d: (d / SPEC_FILE).is_file())
        logger.info("stage %d outputs written to %s", self.stage, out)
        return out

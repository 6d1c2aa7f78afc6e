"""Plan the full-size model without a GPU: parameter counts and a GPU memory estimate per ``qwen2vl7b_*`` recipe.

    python -m scripts.plan                      # table for every qwen2vl7b_* recipe
    python -m scripts.plan --text-tokens 256    # longer prompts + answers than the default 128
    python -m scripts.plan --batch-size 1       # per-GPU batch 1 (keep the effective 8 with accumulate_grad_batches)
    python -m scripts.plan --json plan.json

The real Qwen2-VL-7B-Instruct + whisper-large-v3-turbo configuration (the hub config values) is built on the
``meta`` device -- no weights are allocated -- and every count is read off the module tree: the language model,
the vision tower, the Whisper encoder and the projector, then the trainable tensors of each recipe (stage 1:
projector + 3 audio-token rows; stage 2 / VLAT / QLoRA: peft LoRA on the LM's q/k/v/o, applied to the meta model
with the recipe's own settings, + projector).

Memory per recipe (GiB, one GPU, the recipe's ``data.batch_size`` B, sequence L = 50 audio tokens per second of
``data.max_audio_seconds`` / pool stride + ``--text-tokens``):

- weights: frozen base in bf16 (2 bytes); QLoRA: the LM's linear layers in NF4 with double quantization
  (0.5 byte + 0.127 bit per weight for the scales), everything bitsandbytes skips (embedding, lm_head, vision,
  audio) in bf16; trainable tensors in fp32 (4 bytes).
- grads: fp32, trainable tensors only. optimizer: AdamW's two fp32 moments of the trainable tensors.
- activations with gradient checkpointing: each decoder layer's input kept (B x L x hidden x 2 bytes x layers),
  one layer recomputed at a time (q/k/v/o and the 3 MLP projections, ~ B x L x (6 hidden + 4 intermediate)
  x 2 bytes), the logits for every position (bf16 + the fp32 copy the loss makes + its gradient + the
  log-softmax buffer: B x L x vocab x 14 bytes), and the frozen encoder's forward (one 30 s window, no grad).
- a fixed 2 GiB for the CUDA context, allocator slack and the vision tower's transient use.

This is an estimate from the shapes, not a measurement; the logits term dominates at B 8 and is what a smaller
batch (or gradient accumulation) buys back.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "configs"
GIB = 1024**3
GPUS = (
    ("24 GB (RTX 4090 / A10G / L4)", 24),
    ("40 GB (A100-40GB)", 40),
    ("48 GB (L40S / RTX 6000 Ada)", 48),
    ("80 GB (A100-80GB / H100)", 80),
)
CONTEXT_GIB = 2.0
NF4_BYTES = 0.5 + 0.127 / 8  # 4-bit weights + double-quantized block scales


def full_size_config():
    """`AudioVLMConfig` of Qwen2-VL-7B-Instruct + whisper-large-v3-turbo's encoder, from the hub config values."""
    from transformers import Qwen2VLConfig, WhisperConfig

    from audio_adapter import AudioVLMConfig
    from audio_adapter.testing.hub_replicas import QWEN2_VL_7B_CONFIG, WHISPER_TURBO_CONFIG

    # deep copies: transformers rewrites the nested rope_scaling dict in place, and the replicas write these dicts
    settings = Qwen2VLConfig.from_dict(copy.deepcopy(QWEN2_VL_7B_CONFIG)).to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        settings.pop(key, None)
    return AudioVLMConfig(**settings, audio_config=WhisperConfig.from_dict(copy.deepcopy(WHISPER_TURBO_CONFIG)))


def meta_model(config=None):
    """The full-size `AudioVLMForConditionalGeneration` on the meta device (shapes only, no memory)."""
    from audio_adapter import AudioVLMForConditionalGeneration

    with torch.device("meta"):
        return AudioVLMForConditionalGeneration(config or full_size_config())


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model) -> dict[str, int]:
    """Parameters of the language model (embedding, layers, norm, lm_head), vision tower, Whisper encoder, projector."""
    counts = {
        "language_model": _count(model.model.language_model) + _count(model.lm_head),
        "vision": _count(model.model.visual),
        "audio_encoder": _count(model.audio_tower),
        "projector": _count(model.audio_projector),
    }
    counts["total"] = sum(counts.values())
    assert counts["total"] == _count(model), "a module is missing from the breakdown"
    return counts


def lm_linear_parameters(model) -> int:
    """Weights of the LM's decoder linear layers (what QLoRA quantizes: not embedding / lm_head / vision / audio)."""
    return sum(m.weight.numel() for m in model.model.language_model.layers.modules() if isinstance(m, torch.nn.Linear))


@dataclass
class RecipePlan:
    recipe: str
    stage: int
    batch_size: int
    seq_len: int
    trainable: int
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    activations_gib: float
    total_gib: float
    fits: list[str]


def trainable_parameters(model, recipe: dict) -> int:
    """Trainable tensors of a recipe's ``model:`` section, counted on (a deep copy of) the meta model."""
    from recipes.training.module import lora_target_regex

    hidden = model.config.text_config.hidden_size
    projector = sum(p.numel() for p in model.audio_projector.parameters())
    if int(recipe.get("stage", 1)) == 1:
        return projector + 3 * hidden  # + the 3 audio-token rows
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=int(recipe.get("lora_r", 8)),
        lora_alpha=int(recipe.get("lora_alpha", 16)),
        lora_dropout=float(recipe.get("lora_dropout", 0.05)),
        target_modules=lora_target_regex(recipe.get("lora_targets", ["q_proj", "k_proj", "v_proj", "o_proj"])),
        bias="none",
    )
    key = (
        id(model),
        lora.r,
        tuple(sorted(lora.target_modules)) if isinstance(lora.target_modules, set) else lora.target_modules,
    )
    if key not in _LORA_COUNTS:  # stage 2, VLAT and QLoRA share their LoRA settings: wrap the meta model once
        peft_model = get_peft_model(copy.deepcopy(model), lora)
        _LORA_COUNTS[key] = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    return _LORA_COUNTS[key] + projector


_LORA_COUNTS: dict[tuple, int] = {}


def plan_recipe(
    model, counts: dict[str, int], path: Path, text_tokens: int = 128, batch_size: int | None = None
) -> RecipePlan:
    """Memory estimate of one recipe file at its own batch size (or ``batch_size``)."""
    spec = yaml.safe_load(path.read_text())
    recipe, data = spec["model"], spec["data"]
    cfg, text = model.config, model.config.text_config
    batch = int(batch_size or data["batch_size"])
    seq = round(float(data.get("max_audio_seconds", 30.0)) * cfg.audio_tokens_per_second) + text_tokens
    trainable = trainable_parameters(model, recipe)

    frozen = counts["total"] - counts["projector"]
    if recipe.get("quantization"):
        linear = lm_linear_parameters(model)
        weights = linear * NF4_BYTES + (frozen - linear) * 2
    else:
        weights = frozen * 2
    weights += trainable * 4
    grads = trainable * 4
    optimizer = trainable * 8

    checkpoints = batch * seq * text.hidden_size * 2 * text.num_hidden_layers
    one_layer = batch * seq * (6 * text.hidden_size + 4 * text.intermediate_size) * 2
    logits = batch * seq * text.vocab_size * 14
    audio = cfg.audio_config
    encoder = batch * audio.max_source_positions * audio.d_model * 2 * 4  # frames + one layer's transients, bf16
    activations = checkpoints + one_layer + logits + encoder

    total = (weights + grads + optimizer + activations) / GIB + CONTEXT_GIB
    return RecipePlan(
        recipe=path.name,
        stage=int(recipe.get("stage", 1)),
        batch_size=batch,
        seq_len=seq,
        trainable=trainable,
        weights_gib=round(weights / GIB, 2),
        grads_gib=round(grads / GIB, 3),
        optimizer_gib=round(optimizer / GIB, 3),
        activations_gib=round(activations / GIB, 2),
        total_gib=round(total, 1),
        fits=[name for name, size in GPUS if total <= size],  # GPU "GB" are GiB (an 80 GB H100 has 79.6 GiB free)
    )


def plan(text_tokens: int = 128, recipes: list[Path] | None = None, batch_size: int | None = None) -> dict:
    """Parameter counts and the memory plan of every ``qwen2vl7b_*`` recipe (or ``recipes``)."""
    model = meta_model()
    counts = parameter_counts(model)
    recipes = recipes or sorted(RECIPES_DIR.glob("qwen2vl7b_*.yaml"))
    return {
        "parameters": counts,
        "projector_shapes": {name: list(p.shape) for name, p in model.audio_projector.named_parameters()},
        "projector_type": model.config.projector_type,
        "recipes": [asdict(plan_recipe(model, counts, p, text_tokens, batch_size)) for p in recipes],
    }


def projector_summary(result: dict) -> str:
    """``linear 1280 -> 3584`` for the paper's projector, else its type and tensor count."""
    shapes = result["projector_shapes"]
    if result["projector_type"] == "linear":
        out_features, in_features = shapes["weight"]
        return f"linear {in_features} -> {out_features}"
    return f"{result['projector_type']}, {len(shapes)} tensors"


def render(result: dict) -> str:
    c = result["parameters"]
    lines = [
        "Qwen2-VL-7B-Instruct + whisper-large-v3-turbo encoder (meta device, no weights allocated)",
        f"  language model {c['language_model']:>14,}",
        f"  vision tower   {c['vision']:>14,}",
        f"  audio encoder  {c['audio_encoder']:>14,}",
        f"  projector      {c['projector']:>14,}  ({projector_summary(result)})",
        f"  total          {c['total']:>14,}",
        "",
        (
            f"{'recipe':<30}{'B':>3}{'L':>6}{'trainable':>12}{'weights':>9}{'grads':>7}{'adam':>7}{'activ.':>8}"
            f"{'total GiB':>11}  fits on"
        ),
    ]
    for r in result["recipes"]:
        smallest = r["fits"][0] if r["fits"] else "none of the listed GPUs"
        lines.append(
            f"{r['recipe']:<30}{r['batch_size']:>3}{r['seq_len']:>6}{r['trainable']:>12,}{r['weights_gib']:>9.1f}"
            f"{r['grads_gib']:>7.2f}{r['optimizer_gib']:>7.2f}{r['activations_gib']:>8.1f}{r['total_gib']:>11.1f}  "
            f"{smallest}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text-tokens", type=int, default=128, help="prompt + answer tokens per sample (default 128)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="per-GPU batch instead of each recipe's data.batch_size"
    )
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.text_tokens < 0:
        p.error(f"--text-tokens must be >= 0, got {args.text_tokens}")
    if args.batch_size is not None and args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    result = plan(text_tokens=args.text_tokens, batch_size=args.batch_size)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)

"""`ModelSpec`: how to build the (model, processor) pair, in settings that YAML and JSON can hold.

One definition, used by the Lightning module (its flat ``model.*`` init arguments), by ``scripts/export.py``
(the run's ``training_spec.json`` holds these fields) and by the inference CLIs (``recipes/inference/common.py``). Also
the one dtype map of the project (`DTYPES`) and the QLoRA quantization settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from recipes.common.settings import check_choice, check_int

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("4bit",)
# Frozen modules never quantized for QLoRA: the audio path (loaded separately / trained) and the vision tower.
QLORA_SKIP_MODULES = ["lm_head", "audio_tower", "audio_projector", "visual"]
DEFAULT_PROJECTOR = ("linear", 1)  # (projector_type, projector_stack_factor): the paper's linear projector


def torch_dtype(dtype: str | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16``; None stays None (as stored). Raises ValueError naming the value."""
    if dtype is None:
        return None
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


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


@dataclass
class ModelSpec:
    """How to build `AudioVLMForConditionalGeneration` + `AudioVLMProcessor`.

    Args:
        model: ``"tiny"`` (`audio_adapter.testing.tiny_model_and_processor` with ``tiny_seed`` and
            ``tiny_overrides``), ``"pretrained"`` (`audio_adapter.load_pretrained_parts` from ``vlm`` +
            ``whisper``, hub ids or local folders) or a directory written by ``save_pretrained`` (model +
            processor, e.g. an export). ``"prebuilt"`` records a model passed in as an object (cannot be built).
        tiny_overrides / tiny_seed: settings of the tiny model (`audio_adapter.testing.TINY_DEFAULTS`).
        vlm / whisper: Qwen2-VL and Whisper checkpoints for ``model: pretrained``.
        audio_pool_stride: encoder frames averaged per audio token (pretrained only; tiny: ``tiny_overrides``).
        projector_type / projector_stack_factor: the audio projector (``"linear"``, the paper's, or
            ``"stack_mlp"``: frames stacked by the factor, RMSNorm, SwiGLU MLP). A saved directory brings its
            own; a value other than the default must then match it.
        context_extension: `extension.AudioContextExtension` settings applied to the model.
        dtype: dtype of the weights (a key of `DTYPES`); None: as stored (float32 for tiny).
        quantization: ``"4bit"`` loads the base with bitsandbytes NF4 (QLoRA, CUDA only), or None.

    Every setting is checked when the spec is made (ValueError naming the setting and its value).
    """

    model: str = "tiny"
    tiny_overrides: dict = field(default_factory=dict)
    tiny_seed: int = 0
    vlm: str | None = None
    whisper: str | None = None
    audio_pool_stride: int = 1
    projector_type: str = DEFAULT_PROJECTOR[0]
    projector_stack_factor: int = DEFAULT_PROJECTOR[1]
    context_extension: dict | None = None
    dtype: str | None = "float32"
    quantization: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be 'tiny', 'pretrained' or a save_pretrained directory, got {self.model!r}")
        if not isinstance(self.tiny_overrides or {}, dict):
            raise ValueError(f"tiny_overrides must be a mapping, got {self.tiny_overrides!r}")
        self.tiny_overrides = dict(self.tiny_overrides or {})
        check_int("tiny_seed", self.tiny_seed)
        check_int("audio_pool_stride", self.audio_pool_stride, 1)
        check_int("projector_stack_factor", self.projector_stack_factor, 1)
        if not isinstance(self.projector_type, str) or not self.projector_type.isidentifier():
            raise ValueError(
                f"projector_type must be a name such as 'linear' or 'stack_mlp', got {self.projector_type!r}"
            )
        torch_dtype(self.dtype)
        if self.quantization is not None:
            check_choice("quantization", self.quantization, QUANTIZATIONS)
        if self.context_extension is not None and not isinstance(self.context_extension, dict):
            raise ValueError(f"context_extension must be a mapping or null, got {self.context_extension!r}")
        self.context_extension = dict(self.context_extension) if self.context_extension else None

    # -------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec fields of ``data`` (other keys, e.g. the rest of a ``training_spec.json``, are ignored;
        fields a file written before they existed lacks take their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and (v is not None or k == "dtype")})

    def check_same_base(self, saved: dict[str, Any] | None, where: str = "the checkpoint") -> None:
        """Raise ValueError naming both specs when ``saved`` (`to_dict` of the spec a checkpoint was trained on)
        describes another base model: resuming its trained tensors on another base would continue silently on
        the wrong weights. ``None`` (a checkpoint written before specs were stored) is not checked."""
        if saved is None:
            return
        saved = ModelSpec.from_dict(saved).to_dict()  # a field added since takes its default, as in from_dict
        mine = self.to_dict()

        def differs(key: str) -> bool:
            if key == "model" and "prebuilt" in (mine.get(key), saved.get(key)):
                return False  # a model passed in as an object: where it came from is not known
            return mine.get(key) != saved.get(key)

        differ = sorted(k for k in mine.keys() | saved.keys() if differs(k))
        if differ:
            pairs = ", ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
            raise ValueError(
                f"{where} was trained on another base model ({pairs}). Its spec: {saved}; this run's: {mine}. "
                "Resume with the same model.* settings, or start a new run in another checkpoint folder."
            )

    # -------------------------------------------------------------- building
    def projector_kwargs(self) -> dict[str, Any]:
        """The projector settings to pass to the builders: empty for the default (linear) projector."""
        if (self.projector_type, self.projector_stack_factor) == DEFAULT_PROJECTOR:
            return {}
        return {"projector_type": self.projector_type, "projector_stack_factor": int(self.projector_stack_factor)}

    def build(self):
        """(AudioVLMForConditionalGeneration, AudioVLMProcessor) as this spec describes."""
        from extension import AudioContextExtension

        bnb = quantization_config(self.quantization)  # fails first, with the clear reason, on CPU
        if self.model == "tiny":
            net, processor = self._build_tiny(bnb)
        elif self.model == "pretrained":
            net, processor = self._build_pretrained(bnb)
        elif self.model == "prebuilt":
            raise ValueError("model: prebuilt records a model passed in as an object; give a directory to rebuild it")
        else:
            net, processor = self._build_saved(bnb)
        if self.context_extension:
            net.set_context_extension(AudioContextExtension.from_dict(dict(self.context_extension)))
        return net, processor

    def _build_tiny(self, bnb):
        from audio_adapter.testing import tiny_model_and_processor

        if bnb is not None:
            raise ValueError("quantization applies to real checkpoints (model: pretrained or a directory), not 'tiny'")
        overrides = dict(self.tiny_overrides)
        for key, value in self.projector_kwargs().items():
            if key in overrides and overrides[key] != value:
                raise ValueError(f"{key}={value!r} contradicts tiny_overrides[{key!r}]={overrides[key]!r}")
            overrides[key] = value
        net, processor = tiny_model_and_processor(seed=int(self.tiny_seed), **overrides)
        dtype = torch_dtype(self.dtype)
        return (net.to(dtype) if dtype is not None else net), processor

    def _build_pretrained(self, bnb):
        from audio_adapter import AudioVLMProcessor, load_pretrained_parts

        if not self.vlm or not self.whisper:
            raise ValueError(
                "model: pretrained needs both vlm (a Qwen2-VL checkpoint) and whisper (a Whisper checkpoint)"
            )
        extra = {"model_kwargs": {"quantization_config": bnb}} if bnb is not None else {}
        processor = AudioVLMProcessor.from_parts(self.vlm, self.whisper)
        net = load_pretrained_parts(  # the processor's tokenizer: the 151k-token tokenizer is read once, not twice
            self.vlm,
            self.whisper,
            tokenizer=processor.tokenizer,
            audio_pool_stride=self.audio_pool_stride,
            context_extension=self.context_extension,
            dtype=torch_dtype(self.dtype),
            **self.projector_kwargs(),
            **extra,
        )
        processor.audio_frames_per_token = net.config.audio_frames_per_token  # pooling x projector stacking
        return net, processor

    def _build_saved(self, bnb):
        from transformers import AutoModelForImageTextToText

        from audio_adapter import AudioVLMProcessor

        path = Path(self.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model={self.model!r}: expected 'tiny', 'pretrained' or a directory written by save_pretrained "
                f"(no {path / 'config.json'})"
            )
        kwargs: dict[str, Any] = {"quantization_config": bnb} if bnb is not None else {}
        if self.dtype is not None:
            kwargs["dtype"] = torch_dtype(self.dtype)
        # whichever VLM family the folder holds (each audio family registers its config with the Auto class)
        net = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
        wanted = self.projector_kwargs()
        have = {
            k: getattr(net.config, k, d)
            for k, d in zip(("projector_type", "projector_stack_factor"), DEFAULT_PROJECTOR)
        }
        if wanted and any(have[k] != v for k, v in wanted.items()):
            raise ValueError(f"{path} holds a {have} projector, the spec asks for {wanted}")
        return net, AudioVLMProcessor.from_pretrained(path)

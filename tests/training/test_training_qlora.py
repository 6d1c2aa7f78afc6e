"""QLoRA (4-bit base via bitsandbytes): the code path exists; where it cannot run (no CUDA / no bitsandbytes)
asking for it fails early with a clear reason, and the GPU test is skipped with that reason."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.training.model_spec import quantization_config
from recipes.training.module import AudioVLMLightningModule

HAS_CUDA = torch.cuda.is_available()
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU refusal; this machine has CUDA")
def test_4bit_on_cpu_raises_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)QLoRA.*needs a CUDA GPU.*quantization: null"):
        quantization_config("4bit")
    # the module refuses before loading anything, whatever the model source
    with pytest.raises(RuntimeError, match="CUDA"):
        AudioVLMLightningModule("tiny", stage=2, quantization="4bit")
    with pytest.raises(RuntimeError, match="CUDA"):
        AudioVLMLightningModule(str(tmp_path), stage=2, quantization="4bit")


def test_quantization_option_validation():
    assert quantization_config(None) is None
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantization_config("8bit")
    with pytest.raises(ValueError, match="stage-2 option"):
        AudioVLMLightningModule("tiny", stage=1, quantization="4bit")


def test_qlora_stage2_on_gpu(tmp_path):
    if not HAS_CUDA:
        pytest.skip("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); torch.cuda.is_available() is False here")
    if not HAS_BNB:
        pytest.skip("QLoRA needs bitsandbytes (pip install -e '.[gpu]'); it is not installed")
    from audio_adapter.testing import tiny_model_and_processor
    from recipes.data.collate import model_inputs
    from recipes.data.dataset import AudioShardDataset
    from tests.helpers import make_shards

    base, processor = tiny_model_and_processor(seed=0, **TINY_3S)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    module = AudioVLMLightningModule(str(tmp_path / "base"), stage=2, quantization="4bit", dtype="bfloat16", lr=1e-3)
    quantized = [n for n, m in module.audio_vlm.named_modules() if type(m).__name__ == "Linear4bit"]
    assert quantized and all(".language_model." in n for n in quantized)
    data = make_shards(tmp_path / "data", num=8, seed=0, maxcount=4)
    batch = next(iter(AudioShardDataset(data["glob"], processor, batch_size=4)))
    module = module.cuda()
    inputs = {k: v.cuda() if torch.is_tensor(v) else v for k, v in model_inputs(batch).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module.model(**inputs).loss
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)

"""The offline SmolLM2-135M-Instruct folder in the Qwen2-VL layout
(`audio_adapter.pretrained.offline_parts.gguf_smollm2`), checked against transformers' own GGUF loader
(``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint``, which un-permutes llama.cpp's q/k rows itself).

Which test catches q/k left in llama.cpp's rotary layout (or un-permuted wrongly): `test_every_lm_tensor_equals_
transformers_gguf_loader` (tensor equality) and `test_text_logits_equal_the_gguf_models_bit_for_bit`;
`test_the_logit_comparison_catches_q_k_in_llama_cpp_layout` shows the latter fails when they are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

GGUF_ROWS = 49152
PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer in 3 words.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def gguf_reference(offline_parts):
    """transformers' reading of the GGUF file: {"config", "tensors"} (tensors dequantised, q/k un-permuted)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from audio_adapter.pretrained.offline_parts import smollm2_source

    text = json.loads((offline_parts["vlm"] / "config.json").read_text())
    shape = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    with torch.device("meta"):  # only its parameter names are read: which GGUF tensor is which
        names = LlamaForCausalLM(LlamaConfig(**shape, num_key_value_heads=3, vocab_size=GGUF_ROWS))
    parsed = load_gguf_checkpoint(str(smollm2_source()), return_tensors=True, model_to_load=names)
    return {"config": parsed["config"], "tensors": parsed["tensors"]}


@pytest.fixture(scope="module")
def gguf_model(gguf_reference):
    """``LlamaForCausalLM`` holding transformers' GGUF tensors: what ``from_pretrained(gguf_file=...)`` builds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {k: v for k, v in gguf_reference["config"].items() if k not in ("model_type", "_model_name_or_path")}
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    result = model.load_state_dict(gguf_reference["tensors"], strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied to the embedding
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


@pytest.fixture(scope="module")
def stock(offline_parts):
    from transformers import Qwen2VLForConditionalGeneration

    model, info = Qwen2VLForConditionalGeneration.from_pretrained(str(offline_parts["vlm"]), output_loading_info=True)
    return model.eval(), info


def test_stock_qwen2vl_loads_the_lm_folder_completely_and_sees_an_image(offline_parts, stock):
    from PIL import Image
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, info = stock
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    text = model.config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (576, 1536, 30)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (9, 3, 49216)
    assert text.rms_norm_eps == 1e-5 and text.rope_parameters["rope_theta"] == 100000.0
    assert text.rope_parameters["mrope_section"] == [8, 12, 12] and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert model.generation_config.eos_token_id == 2  # <|im_end|>
    assert "vision tower is RANDOM" in (offline_parts["vlm"] / "README.md").read_text()
    # The stock Qwen2VLProcessor needs torchvision (its video processor); its two halves are used directly.
    tokenizer = AutoTokenizer.from_pretrained(str(offline_parts["vlm"]))
    images = Qwen2VLImageProcessorPil.from_pretrained(str(offline_parts["vlm"]))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    inputs = dict(images(images=[image], return_tensors="pt"))
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]  # 4 x 6 patches -> 6 tokens after the 2 x 2 merge
    ids = tokenizer([prompt.replace("<|image_pad|>", "<|image_pad|>" * 6)], return_tensors="pt").input_ids
    inputs.update(input_ids=ids, mm_token_type_ids=(ids == model.config.image_token_id).int())
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 49216 and torch.isfinite(logits).all()


def test_lm_tokenizer_is_smollm2s_plus_the_qwen2_vl_tokens(offline_parts):
    from transformers import AutoTokenizer

    from audio_adapter.pretrained.offline_parts import smollm2_source
    from audio_adapter.processing.tokenizer import AUDIO_SPECIAL_TOKENS, QWEN2_VL_SPECIAL_TOKENS

    ours = AutoTokenizer.from_pretrained(str(offline_parts["vlm"]))
    source = smollm2_source()
    gguf = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    for text in (PROMPT, "Hello world 12 three, café naïve!\n\tcode()", "  spaces   and\nnewlines "):
        assert ours(text).input_ids == gguf(text).input_ids, text
    assert [ours.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIAL_TOKENS[:3]] == [0, 1, 2]  # SmolLM2's own
    assert [ours.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIAL_TOKENS[3:]] == list(range(49152, 49163))
    assert len(ours) == 49163 and not any(t in ours.get_vocab() for t in AUDIO_SPECIAL_TOKENS)
    assert (ours.eos_token, ours.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert ours("<|vision_start|><|image_pad|>").input_ids == [49158, 49161]  # split off, never BPE'd


def test_every_lm_tensor_equals_transformers_gguf_loader(offline_parts, gguf_reference):
    ours = load_file(str(offline_parts["vlm"] / "model.safetensors"))
    reference = gguf_reference["tensors"]
    assert len(reference) == 272 and all(k in ours for k in reference)
    for key, tensor in reference.items():
        mine = ours[key]
        assert mine.dtype == tensor.dtype == torch.float32, key
        if key == "model.embed_tokens.weight":
            assert torch.equal(mine[:GGUF_ROWS], tensor)
            assert torch.equal(mine[GGUF_ROWS:], tensor.mean(0).expand(49216 - GGUF_ROWS, -1))
        else:
            assert torch.equal(mine, tensor), key
    biases = [k for k in ours if k.endswith("_proj.bias")]
    assert len(biases) == 90 and all(not ours[k].any() for k in biases)  # Qwen2's q/k/v biases, zero
    visual = {k for k in ours if k.startswith("visual.")}
    assert set(ours) - set(reference) - set(biases) == visual
    # the random vision tower is the seeded one the folder's README names: rebuilt from its config, bit-equal
    from audio_adapter.pretrained.offline_parts.gguf_smollm2 import VISION_SEED, vision_state

    config = json.loads((offline_parts["vlm"] / "config.json").read_text())
    rebuilt = vision_state(config, seed=VISION_SEED)
    assert set(rebuilt) == visual and all(torch.equal(rebuilt[k], ours[k]) for k in visual)


def _text_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits[..., :GGUF_ROWS]


def test_text_logits_equal_the_gguf_models_bit_for_bit(offline_parts, stock, gguf_model):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(offline_parts["vlm"]))([PROMPT], return_tensors="pt").input_ids
    ours = _text_logits(stock[0], ids)
    assert torch.equal(ours, _text_logits(gguf_model, ids))


def _llama_cpp_permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py), stated here independently of the converter."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def test_the_logit_comparison_catches_q_k_in_llama_cpp_layout(offline_parts, stock, gguf_model):
    from transformers import AutoTokenizer

    from audio_adapter.pretrained.offline_parts.gguf_llama import unpermute_rotary_rows

    ids = AutoTokenizer.from_pretrained(str(offline_parts["vlm"]))([PROMPT], return_tensors="pt").input_ids
    model = stock[0]
    attn = model.model.language_model.layers[0].self_attn
    q, k = attn.q_proj.weight.detach().clone(), attn.k_proj.weight.detach().clone()
    assert torch.equal(torch.from_numpy(unpermute_rotary_rows(_llama_cpp_permute(q, 9).numpy(), 9)), q)
    try:
        with torch.no_grad():
            attn.q_proj.weight.copy_(_llama_cpp_permute(q, 9))
            attn.k_proj.weight.copy_(_llama_cpp_permute(k, 3))
        assert not torch.equal(_text_logits(model, ids), _text_logits(gguf_model, ids))
    finally:
        with torch.no_grad():
            attn.q_proj.weight.copy_(q)
            attn.k_proj.weight.copy_(k)

"""Issue: parity with stock Qwen2-VL — transformers-style model/generation checks run on stock
`Qwen2VLForConditionalGeneration` and on `AudioVLMForConditionalGeneration` with the same weights and no audio.

Each case runs on both models; it must pass on stock (else the case itself is broken) and give bit-identical
outputs on ours. Cases follow transformers' GenerationTesterMixin: greedy, sampling with a seed, beams, static
cache, prompt-lookup and assisted decoding, a forced ``<|AUDIO|>`` token (generated tokens are text: stock
simply embeds the token), one compiled decode step with ``fullgraph=True`` and ``torch.export`` of a text forward.

Compilation uses dynamo's ``"eager"`` backend: what the issue is about is graph *capture* (data-dependent
branches, graph breaks), which dynamo decides before any backend sees the graph, so the backend choice does not
change the outcome; inductor would only add minutes of C++ compilation on CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from audio_adapter.model.transformers_hooks import cache_kwarg, returned_cache
from audio_adapter.testing import TINY_3S, tiny_model_and_processor
from tests.helpers import single_thread  # noqa: F401 (autouse: tiny models, no OpenMP spinning)
from tests.model.test_model import stock_twin

KINDS = ("stock", "ours")


def _stock_like(model):
    stock = stock_twin(model)
    stock.generation_config = copy.deepcopy(model.generation_config)
    return stock


@pytest.fixture(scope="module")
def models(family):
    ours, processor = tiny_model_and_processor(seed=0, family=family, **TINY_3S)
    helper, _ = tiny_model_and_processor(seed=1, family=family, **TINY_3S)  # assistant for assisted decoding
    return {
        "models": {"stock": _stock_like(ours), "ours": ours},
        "assistants": {"stock": _stock_like(helper), "ours": helper},
        "processor": processor,
    }


class ForceTokenAt(LogitsProcessor):
    """Forces ``token_id`` as the generated token at the given steps (0 = the first new token)."""

    def __init__(self, token_id: int, steps: set[int], prompt_length: int):
        self.token_id, self.steps, self.prompt_length = token_id, set(steps), prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] - self.prompt_length in self.steps:
            forced = torch.full_like(scores, -float("inf"))
            forced[:, self.token_id] = 0.0
            return forced
        return scores


def _text_batch(processor, n: int = 2):
    prompts = ["Hello world, how are you today?", "Hi", "The cat sat on the mat. The cat sat on the"][:n]
    return processor(text=prompts, padding=True, padding_side="left")


def _generate(model, inputs, **kwargs):
    out = model.generate(
        **inputs, max_new_tokens=6, min_new_tokens=6, return_dict_in_generate=True, output_scores=True, **kwargs
    )
    result = {"sequences": out.sequences, "scores": torch.stack(out.scores)}
    if getattr(out, "sequences_scores", None) is not None:
        result["sequences_scores"] = out.sequences_scores
    return result


def case_greedy(model, processor, assistant):
    return _generate(model, _text_batch(processor), do_sample=False)


def case_sample_seeded(model, processor, assistant):
    torch.manual_seed(0)
    return _generate(model, _text_batch(processor), do_sample=True, top_k=20, temperature=0.9, num_return_sequences=2)


def case_beam_search(model, processor, assistant):
    return _generate(model, _text_batch(processor), do_sample=False, num_beams=3, num_return_sequences=2)


def case_static_cache(model, processor, assistant):
    inputs = _text_batch(processor)
    return _generate(model, inputs, do_sample=False, cache_implementation="static", disable_compile=True)


def case_image_prompt_greedy(model, processor, assistant):
    image = (np.random.default_rng(0).random((56, 84, 3)) * 255).astype("uint8")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}],
        add_generation_prompt=True,
    )
    return _generate(model, processor(text=[prompt], images=[image]), do_sample=False)


def case_prompt_lookup(model, processor, assistant):
    inputs = processor(text=["the cat sat on the mat and the cat sat on the mat and the cat"])
    return _generate(model, inputs, do_sample=False, prompt_lookup_num_tokens=3)


def case_assisted(model, processor, assistant):
    inputs = processor(text=["Hello world, how are you today?"])
    return _generate(model, inputs, do_sample=False, assistant_model=assistant)


def case_forced_audio_token(model, processor, assistant):
    inputs = _text_batch(processor)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    force = ForceTokenAt(audio_id, {1, 2, 4}, inputs["input_ids"].shape[1])
    out = _generate(model, inputs, do_sample=False, logits_processor=LogitsProcessorList([force]))
    generated = out["sequences"][:, inputs["input_ids"].shape[1] :]
    assert (generated[:, [1, 2, 4]] == audio_id).all()  # the forced tokens really were generated (and fed back)
    return out


def case_forced_audio_token_without_cache(model, processor, assistant):
    """``use_cache=False``: every step re-reads the whole sequence, generated ``<|AUDIO|>`` tokens included."""
    inputs = _text_batch(processor)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    force = ForceTokenAt(audio_id, {1, 2, 4}, inputs["input_ids"].shape[1])
    out = _generate(model, inputs, do_sample=False, use_cache=False, logits_processor=LogitsProcessorList([force]))
    assert (out["sequences"][:, inputs["input_ids"].shape[1] :][:, [1, 2, 4]] == audio_id).all()
    return out


def case_forced_audio_token_beams(model, processor, assistant):
    inputs = _text_batch(processor)
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    force = ForceTokenAt(audio_id, {0, 3}, inputs["input_ids"].shape[1])
    return _generate(model, inputs, do_sample=False, num_beams=2, logits_processor=LogitsProcessorList([force]))


def case_compiled_decode_step_fullgraph(model, processor, assistant):
    """Eager prefill, then one decode step compiled with ``fullgraph=True`` (a graph break raises)."""
    torch._dynamo.reset()
    inputs = _text_batch(processor)
    with torch.no_grad():
        prefill = model(**inputs, **cache_kwarg(DynamicCache(config=model.config)), use_cache=True)
        next_ids = prefill.logits[:, -1:].argmax(-1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_ids)], dim=1)
        eager_cache = copy.deepcopy(returned_cache(prefill))

        # explicit positions, as generate() passes them (stock derives them from a stale `rope_deltas` otherwise)
        positions = (mask.cumsum(-1) - 1)[None, :, -1:].expand(3, -1, -1)

        def step(ids, attention_mask, cache):
            step_inputs = {"input_ids": ids, "attention_mask": attention_mask, "position_ids": positions}
            return model(**step_inputs, **cache_kwarg(cache), use_cache=True).logits

        compiled = torch.compile(step, fullgraph=True, backend="eager")(next_ids, mask, returned_cache(prefill))
        eager = step(next_ids, mask, eager_cache)
    # under tracing transformers builds an explicit attention mask where eager may skip it: equal up to rounding
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
    return {"logits": compiled}


def case_export_text_forward(model, processor, assistant):
    """``torch.export`` of a text forward (no cache); the exported program reproduces the eager logits."""
    inputs = _text_batch(processor)
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "use_cache": False}
    program = torch.export.export(model, args=(), kwargs=kwargs)
    with torch.no_grad():
        exported = program.module()(**kwargs).logits
        eager = model(**kwargs).logits
    assert torch.equal(exported, eager)
    return {"logits": exported}


CASES = {name[len("case_") :]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stock_and_ours_agree(models, case):
    results = {}
    for kind in KINDS:
        model = models["models"][kind]
        with torch.no_grad():
            results[kind] = CASES[case](model, models["processor"], models["assistants"][kind])
    stock, ours = results["stock"], results["ours"]
    assert stock.keys() == ours.keys() and stock
    for key in stock:
        assert stock[key].shape == ours[key].shape, key
        assert torch.equal(stock[key], ours[key]), f"{case}: {key} differs from stock Qwen2-VL"

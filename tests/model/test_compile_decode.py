"""Issue: compiled decoding with audio in the cache — graph-break-free decode steps, compiled static-cache
``generate()`` equal to eager, with and without Partial YaRN.

Graphs are counted with a backend that records every graph dynamo hands it and runs it eagerly. Graph breaks
and recompiles are decided by dynamo's capture before any backend is involved, so the count is the same under
inductor; inductor itself would only add minutes of C++ compilation on CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CompileConfig, LogitsProcessorList

from audio_adapter.model.transformers_hooks import cache_kwarg, returned_cache
from audio_adapter.testing import TINY_3S, tiny_model_and_processor
from tests.helpers import (
    audio_prompt,
    single_thread,  # noqa: F401 (autouse: tiny models, no OpenMP spinning)
    tone_clip,
)

PARTIAL_YARN = {"method": "partial_yarn", "cutoff": 2, "temperature": 1.3, "base_audio_seconds": 1.0}
GRAPHS: list[torch.fx.GraphModule] = []


def counting_backend(gm: torch.fx.GraphModule, example_inputs) -> callable:
    """Records each captured graph and runs it as is (a module-level function: CompileConfig deep-copies)."""
    GRAPHS.append(gm)
    return gm.forward


def _audio_batch(processor):
    # left-padded batch of two samples whose clips differ in length (different placeholder counts)
    prompts = [audio_prompt(processor), audio_prompt(processor, "Again?")]
    return processor(
        text=prompts, audio=[tone_clip(2.0, 300.0), tone_clip(0.7, 500.0, seed=1)], sampling_rate=16000, padding=True
    )


@pytest.fixture(scope="module")
def model_and_processor():
    return tiny_model_and_processor(seed=3, **TINY_3S)


@pytest.mark.parametrize("extension", [None, PARTIAL_YARN], ids=["no_extension", "partial_yarn"])
def test_one_decode_step_with_audio_in_cache_has_no_graph_breaks(extension):
    """A manual decode step (no position_ids: with Partial YaRN the model continues the extended positions of
    its last prefill) captured by dynamo: one graph, zero breaks, as stock Qwen2-VL (see
    tests/model/test_stock_parity.py)."""
    model, processor = tiny_model_and_processor(seed=3, context_extension=extension, **TINY_3S)  # fresh: no stale state
    inputs = _audio_batch(processor)
    torch._dynamo.reset()
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)  # eager prefill: the audio is now in the cache
        next_ids = prefill.logits[:, -1:].argmax(-1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_ids)], dim=1)

        def step(ids, attention_mask, cache):
            return model(input_ids=ids, attention_mask=attention_mask, **cache_kwarg(cache), use_cache=True).logits

        explained = torch._dynamo.explain(step)(next_ids, mask, returned_cache(prefill))
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("extension", [None, PARTIAL_YARN], ids=["no_extension", "partial_yarn"])
def test_compiled_static_cache_generate_equals_eager(model_and_processor, extension):
    model, processor = model_and_processor
    inputs = _audio_batch(processor)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, cache_implementation="static")
    config = CompileConfig(fullgraph=True, backend=counting_backend, mode=None)
    config._compile_all_devices = True  # generate() compiles decode steps on CPU only when asked to
    if extension is not None:
        model.set_context_extension(**extension)
    try:
        torch._dynamo.reset()
        GRAPHS.clear()
        with torch.no_grad():
            eager = model.generate(**inputs, **kwargs, disable_compile=True)
            compiled = model.generate(**inputs, **kwargs, compile_config=config)
    finally:
        model.set_context_extension(method="none")
        model.__dict__.pop("_compiled_call", None)
    # four compiled decode steps, all through one graph: no graph break and no recompilation between steps
    assert len(GRAPHS) == 1
    assert torch.equal(compiled, eager)


def test_prompt_placeholders_without_audio_still_raise(model_and_processor):
    """The check left the decode steps but not the prompt: a direct forward, generate (dynamic or compiled static
    cache) and a cache continuation whose new turn has placeholders all still name the missing audio."""
    model, processor = model_and_processor
    with_audio = _audio_batch(processor)
    text_only = {k: v for k, v in with_audio.items() if k not in ("input_features", "input_features_mask")}
    n = int((text_only["input_ids"] == model.config.audio_token_id).sum())
    message = f"{n} <.AUDIO.> placeholder tokens but no audio was given"
    config = CompileConfig(fullgraph=True, backend=counting_backend, mode=None)
    config._compile_all_devices = True
    with torch.no_grad():
        with pytest.raises(ValueError, match=message):
            model(**text_only)
        with pytest.raises(ValueError, match=message):
            model.generate(**text_only, max_new_tokens=2)
        with pytest.raises(ValueError, match=message):
            model.generate(**text_only, max_new_tokens=2, cache_implementation="static", compile_config=config)
        # continuation: the first turn's audio is cached; a new turn with a placeholder but no audio is an error
        first = model.generate(**with_audio, max_new_tokens=2, return_dict_in_generate=True)
        turn = processor.tokenizer(["\nAnd <|AUDIO|>?"] * 2, return_tensors="pt").input_ids
        history = torch.cat([first.sequences, turn], dim=1)
        with pytest.raises(ValueError, match="2 <.AUDIO.> placeholder tokens but no audio"):  # one per row
            model.generate(
                input_ids=history,
                attention_mask=torch.ones_like(history),
                **cache_kwarg(returned_cache(first)),
                max_new_tokens=2,
            )
    model.__dict__.pop("_compiled_call", None)


def test_generated_audio_token_with_audio_in_cache_is_text(model_and_processor):
    """An ``<|AUDIO|>`` the model emits is a text token: generation goes on, and the decode step that feeds it
    gives exactly the logits of feeding that token's embedding row (no audio frame is looked for)."""
    from tests.model.test_stock_parity import ForceTokenAt

    model, processor = model_and_processor
    inputs = _audio_batch(processor)
    audio_id = model.config.audio_token_id
    prompt_length = inputs["input_ids"].shape[1]
    force = ForceTokenAt(audio_id, {0, 2}, prompt_length)
    with torch.no_grad():
        processors = LogitsProcessorList([force])
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, logits_processor=processors)
        assert (out[:, prompt_length + 0] == audio_id).all() and (out[:, prompt_length + 2] == audio_id).all()

        prefill = model(**inputs, use_cache=True)
        cache_copy = copy.deepcopy(returned_cache(prefill))
        ids = torch.full((2, 1), audio_id)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], dim=1)
        # explicit positions: stock Qwen2-VL cannot derive a decode step's positions from inputs_embeds + a 2D mask
        positions = (mask.cumsum(-1) - 1)[None, :, -1:].expand(3, -1, -1)
        step = dict(attention_mask=mask, position_ids=positions)
        as_token = model(input_ids=ids, **cache_kwarg(returned_cache(prefill)), **step).logits
        as_text = model(inputs_embeds=model.get_input_embeddings()(ids), **cache_kwarg(cache_copy), **step).logits
    assert torch.equal(as_token, as_text)

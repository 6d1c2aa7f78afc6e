"""Issue: compiled decoding with audio in the cache — graph-break-free decode steps, compiled static-cache
``generate()`` equal to eager, with and without Partial YaRN.

Graphs are counted with a backend that records every graph dynamo hands it and runs it eagerly. Graph breaks
and recompiles are decided by dynamo's capture before any backend is involved, so the count is the same under
inductor; inductor itself would only add minutes of C++ compilation on CPU.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig

from audio_adapter.testing import tiny_model_and_processor
from tests.conftest import audio_prompt, tone_clip

TINY = {"max_source_positions": 150, "num_mel_bins": 80}
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
    return tiny_model_and_processor(seed=3, **TINY)


def test_one_decode_step_with_audio_in_cache_has_no_graph_breaks(model_and_processor):
    model, processor = model_and_processor
    inputs = _audio_batch(processor)
    torch._dynamo.reset()
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)  # eager prefill: the audio is now in the cache
        next_ids = prefill.logits[:, -1:].argmax(-1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_ids)], dim=1)

        def step(ids, attention_mask, cache):
            return model(input_ids=ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True).logits

        explained = torch._dynamo.explain(step)(next_ids, mask, prefill.past_key_values)
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

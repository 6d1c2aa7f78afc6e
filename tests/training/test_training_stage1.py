"""Stage 1 on the tiny model: only the projector and the three audio-token rows train; every other weight
(LLM incl. the other embedding rows, vision tower, Whisper encoder) stays bit-identical; the loss falls."""

from __future__ import annotations

import pytest
import torch

from audio_adapter.testing import TINY_3S
from recipes.data.collate import model_inputs
from recipes.data.dataset import AudioShardDataset
from recipes.training.module import SPEC_FILE, AudioVLMLightningModule
from recipes.training.projector_file import PROJECTOR_FILE, audio_token_ids, load_projector_file, read_projector_file
from tests.helpers import (
    StepRecorder,
    datamodule,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    trainer,
)

STEPS = 30


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("stage1_data"), num=16, seed=0, maxcount=4)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    from audio_adapter.testing import tiny_model_and_processor

    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2)
    before = {k: v.clone() for k, v in module.audio_vlm.state_dict().items()}
    rec = StepRecorder()
    trainer(STEPS, [rec]).fit(module, datamodule(shards["glob"]))
    out = tmp_path_factory.mktemp("stage1_out")
    module.save_trained(out)
    fresh, _ = tiny_model_and_processor(seed=0, **TINY_3S)
    return {"module": module, "before": before, "losses": rec.losses, "out": out, "fresh": fresh}


def test_stage1_trains_only_projector_and_new_rows(trained):
    module, before = trained["module"], trained["before"]
    assert sorted(module.trainable_parameter_names()) == ["audio_token_rows.delta", "model.audio_projector.weight"]
    after = module.audio_vlm.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["audio_projector.weight"]  # the embedding matrix itself is never written in stage 1
    # the delta moved the <|audio_bos|> / <|audio_eos|> rows (the <|AUDIO|> rows are replaced by audio frames,
    # so that row gets no gradient)
    delta = module.audio_token_rows.delta.detach()
    assert delta[0].abs().sum() > 0 and delta[2].abs().sum() > 0
    assert torch.all(delta[1] == 0)


def test_stage1_output_changes_only_projector_and_three_rows(trained):
    """Merging the stage-1 output into the base: only the projector and the 3 audio-token rows differ; every other
    weight, including every other embedding row, is bit-identical to the untouched base."""
    base = {k: v.clone() for k, v in trained["fresh"].state_dict().items()}
    merged = trained["fresh"]
    load_projector_file(merged, trained["out"])
    ids = audio_token_ids(merged.config)
    emb_key = "model.language_model.embed_tokens.weight"
    for key, value in merged.state_dict().items():
        if key == "audio_projector.weight":
            assert not torch.equal(value, base[key])
        elif key == emb_key:
            other = torch.ones(value.shape[0], dtype=torch.bool)
            other[ids] = False
            assert torch.equal(value[other], base[key][other]), "embedding rows other than the audio tokens changed"
            assert not torch.equal(value[ids[0]], base[key][ids[0]])
            assert not torch.equal(value[ids[2]], base[key][ids[2]])
        else:
            assert torch.equal(value, base[key]), key
    tensors, meta = read_projector_file(trained["out"] / PROJECTOR_FILE)
    assert set(tensors) == {"audio_projector.weight", "audio_token_embeddings"}
    assert tensors["audio_token_embeddings"].shape == (3, merged.config.text_config.hidden_size)
    assert (trained["out"] / SPEC_FILE).is_file()


def test_stage1_merged_rows_reproduce_training_forward(trained, shards):
    """The saved rows are what the training-time forward (frozen embedding + delta hook) saw."""
    module = trained["module"].eval()
    merged = trained["fresh"]
    load_projector_file(merged, trained["out"])
    batch = next(iter(AudioShardDataset(shards["glob"], module.processor, batch_size=2)))
    inputs = model_inputs(batch, with_labels=False)
    with torch.no_grad():
        a = module.model(**inputs).logits
        b = merged.eval()(**inputs).logits
    assert (a - b).abs().max() <= 1e-5


def test_stage1_loss_decreases(trained):
    losses = trained["losses"]
    assert len(losses) == STEPS
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.1, (first, last, losses)

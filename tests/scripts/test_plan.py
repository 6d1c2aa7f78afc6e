"""scripts/plan.py: the full-size Qwen2-VL-7B + whisper-large-v3-turbo model on the meta device. The parameter
counts are checked against the architecture's closed-form counts (and Qwen2-VL-7B's published 8,291,375,616),
the trainable counts against LoRA's r x (in + out) per adapted matrix, and the README's table against the script."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import plan as plan_script

V, H, I, LAYERS, KV = 152064, 3584, 18944, 28, 4 * 128  # noqa: E741 (Qwen2-VL-7B text model)
D, ENC_LAYERS, FFN = 1280, 32, 5120  # whisper-large-v3-turbo encoder
PROJECTOR = 1280 * 3584


@pytest.fixture(scope="module")
def result():
    return plan_script.plan()


def test_parameter_counts_match_the_architecture(result):
    layer = 2 * H * H + H + 2 * (H * KV + KV) + 3 * H * I + 2 * H  # q (bias), k, v (bias), o; gate/up/down; 2 norms
    lm = 2 * V * H + LAYERS * layer + H  # untied embedding + lm_head, final norm
    e = 1280  # vision embed dim
    block = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)
    vision = 3 * 2 * 14 * 14 * e + 32 * block + 2 * e + (4 * e * 4 * e + 4 * e) + (4 * e * H + H)
    enc_layer = 4 * D * D + 3 * D + 4 * D + (D * FFN + FFN) + (FFN * D + D)
    encoder = (128 * D * 3 + D) + (D * D * 3 + D) + 1500 * D + ENC_LAYERS * enc_layer + 2 * D
    counts = result["parameters"]
    assert counts["language_model"] == lm
    assert counts["vision"] == vision
    assert counts["language_model"] + counts["vision"] == 8_291_375_616  # Qwen2-VL-7B-Instruct as published
    assert counts["audio_encoder"] == encoder
    assert counts["projector"] == PROJECTOR and result["projector_shapes"] == {"weight": [3584, 1280]}
    assert counts["total"] == lm + vision + encoder + PROJECTOR


def test_trainable_parameters_per_recipe(result):
    by_name = {r["recipe"]: r for r in result["recipes"]}
    assert set(by_name) == {
        "qwen2vl7b_stage1.yaml",
        "qwen2vl7b_stage2.yaml",
        "qwen2vl7b_stage2_vlat.yaml",
        "qwen2vl7b_stage2_qlora.yaml",
    }
    assert by_name["qwen2vl7b_stage1.yaml"]["trainable"] == PROJECTOR + 3 * H  # + the 3 audio-token rows
    lora = LAYERS * 8 * (2 * (H + H) + 2 * (H + KV))  # r 8 on q, o (H -> H) and k, v (H -> 512)
    for name in ("qwen2vl7b_stage2.yaml", "qwen2vl7b_stage2_vlat.yaml", "qwen2vl7b_stage2_qlora.yaml"):
        assert by_name[name]["trainable"] == lora + PROJECTOR


def test_memory_estimate_terms(result):
    counts = result["parameters"]
    by_name = {r["recipe"]: r for r in result["recipes"]}
    stage2, qlora = by_name["qwen2vl7b_stage2.yaml"], by_name["qwen2vl7b_stage2_qlora.yaml"]
    bf16 = ((counts["total"] - PROJECTOR) * 2 + stage2["trainable"] * 4) / plan_script.GIB
    assert stage2["weights_gib"] == pytest.approx(bf16, abs=0.01)
    assert qlora["weights_gib"] < 0.5 * stage2["weights_gib"]
    assert stage2["optimizer_gib"] == pytest.approx(2 * stage2["grads_gib"], abs=0.002)
    for r in result["recipes"]:
        assert r["batch_size"] == 8 and r["seq_len"] == 30 * 50 + 128
        parts = r["weights_gib"] + r["grads_gib"] + r["optimizer_gib"] + r["activations_gib"] + plan_script.CONTEXT_GIB
        assert r["total_gib"] == pytest.approx(parts, abs=0.1)
        assert r["fits"] == [name for name, size in plan_script.GPUS if r["total_gib"] <= size]
    half = plan_script.plan_recipe(
        plan_script.meta_model(), counts, plan_script.RECIPES_DIR / "qwen2vl7b_stage2.yaml", batch_size=4
    )
    assert half.activations_gib == pytest.approx(stage2["activations_gib"] / 2, abs=0.02)  # linear in the batch


def test_readme_shows_the_plan(result):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert plan_script.render(result) in readme


def test_building_the_plan_leaves_the_replica_configs_untouched():
    """transformers rewrites a config's nested rope_scaling dict in place: the plan must build from copies, or
    every hub replica written later in the same process carries keys the hub file does not have."""
    import copy

    from audio_adapter.testing.hub_replicas import QWEN2_VL_7B_CONFIG, WHISPER_TURBO_CONFIG

    before = copy.deepcopy((QWEN2_VL_7B_CONFIG, WHISPER_TURBO_CONFIG))
    plan_script.full_size_config()
    assert (QWEN2_VL_7B_CONFIG, WHISPER_TURBO_CONFIG) == before

"""extension.rope / partial_yarn_cos_sin / whole_context against closed-form values and transformers."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

from extension.partial_yarn import partial_yarn_cos_sin
from extension.rope import cos_sin_from_angles, rope_angles
from extension.whole_context import context_factor, whole_pi_inv_freq, whole_yarn_inv_freq

# head_dim 8: four frequencies, explicit numbers
INV_FREQ = torch.tensor([1.0, 0.5, 0.25, 0.125])
RAW = [0.0, 1.0, 5.0, 9.0]
STRETCHED = [0.0, 1.0, 3.0, 4.5]
AUDIO = [False, False, True, True]


def _expected(raw_rows, str_rows, section, cutoff, temperature, audio, inv_freq, scaling=1.0):
    """cos/sin (L, D) by the formula: angle_i = pos_row(i) * inv_freq_i, pos = raw if i < cutoff else stretched."""
    half = len(inv_freq)
    row_of = [k % 3 for k, size in enumerate(section) for _ in range(size)] if section else [0] * half
    cos, sin = [], []
    for token in range(len(audio)):
        scale = scaling / math.sqrt(temperature) if audio[token] else scaling
        angles = [(raw_rows if i < cutoff else str_rows)[row_of[i]][token] * float(inv_freq[i]) for i in range(half)]
        cos.append([math.cos(a) * scale for a in angles] * 2)
        sin.append([math.sin(a) * scale for a in angles] * 2)
    return torch.tensor(cos), torch.tensor(sin)


@pytest.mark.parametrize("cutoff", [0, 2, 4])
@pytest.mark.parametrize("temperature", [1.0, 1.44])
def test_partial_yarn_1d_matches_closed_form(cutoff, temperature):
    cos, sin = partial_yarn_cos_sin(
        INV_FREQ, torch.tensor([RAW]), torch.tensor([STRETCHED]), torch.tensor([AUDIO]), cutoff, temperature
    )
    exp_cos, exp_sin = _expected([RAW], [STRETCHED], None, cutoff, temperature, AUDIO, INV_FREQ)
    assert cos.shape == sin.shape == (1, 4, 8) and cos.dtype == torch.float32
    assert torch.allclose(cos[0], exp_cos, atol=1e-6)
    assert torch.allclose(sin[0], exp_sin, atol=1e-6)


def test_partial_yarn_literal_values():
    cos, sin = partial_yarn_cos_sin(
        INV_FREQ, torch.tensor([RAW]), torch.tensor([STRETCHED]), torch.tensor([AUDIO]), 2, 1.44
    )
    # token 2 (audio, raw 5, stretched 3), frequency 3 (>= cutoff: stretched): angle 3 * 0.125 = 0.375, scale 1/1.2
    assert cos[0, 2, 3].item() == pytest.approx(0.7754230182602619, abs=1e-6)
    assert sin[0, 2, 7].item() == pytest.approx(0.30522710757170635, abs=1e-6)
    # token 2, frequency 1 (< cutoff: raw): angle 5 * 0.5 = 2.5
    assert cos[0, 2, 1].item() == pytest.approx(math.cos(2.5) / 1.2, abs=1e-6)
    # token 3, frequency 2 (stretched 4.5 * 0.25), audio scale
    assert sin[0, 3, 2].item() == pytest.approx(0.751889661749246, abs=1e-6)
    # text token 1: unscaled, raw == stretched
    assert cos[0, 1, 0].item() == pytest.approx(math.cos(1.0), abs=1e-7)


def test_temperature_scales_only_audio_tokens_and_attention_scaling_all():
    args = (INV_FREQ, torch.tensor([RAW]), torch.tensor([STRETCHED]), torch.tensor([AUDIO]), 2)
    cos1, _ = partial_yarn_cos_sin(*args, 1.0)
    cos_t, sin_t = partial_yarn_cos_sin(*args, 1.44, attention_scaling=0.5)
    assert torch.allclose(cos_t[0, :2], 0.5 * cos1[0, :2], atol=1e-7)
    assert torch.allclose(cos_t[0, 2:], 0.5 / 1.2 * cos1[0, 2:], atol=1e-7)
    assert torch.allclose(cos_t**2 + sin_t**2, torch.tensor([0.25, 0.25, 0.25 / 1.44, 0.25 / 1.44])[None, :, None])


@pytest.mark.parametrize("cutoff", [0, 3, 6])
@pytest.mark.parametrize("temperature", [1.0, 1.44])
def test_partial_yarn_mrope_matches_closed_form(cutoff, temperature):
    # head_dim 12: six frequencies in sections [2, 2, 2] -> rows t, t, h, h, w, w; cutoff 3 splits the h chunk
    inv_freq = torch.tensor([1.0, 0.6, 0.3, 0.2, 0.1, 0.05])
    raw = [[0, 1, 2, 3, 4, 4, 6], [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 5, 4, 6]]
    stretched = [[0, 1, 1.5, 2, 2.5, 2.5, 4.5], [0, 1, 1.5, 2, 2.5, 3.5, 4.5], [0, 1, 1.5, 2, 3.5, 2.5, 4.5]]
    audio = [False, True, True, True, False, False, False]
    cos, sin = partial_yarn_cos_sin(
        inv_freq,
        torch.tensor(raw, dtype=torch.float32)[:, None],
        torch.tensor(stretched)[:, None],
        torch.tensor([audio]),
        cutoff,
        temperature,
        mrope_section=[2, 2, 2],
    )
    exp_cos, exp_sin = _expected(raw, stretched, [2, 2, 2], cutoff, temperature, audio, inv_freq)
    assert cos.shape == (1, 7, 12)
    assert torch.allclose(cos[0], exp_cos, atol=1e-6)
    assert torch.allclose(sin[0], exp_sin, atol=1e-6)


def test_unstretched_mrope_equals_stock_qwen2vl_rotary_bit_for_bit():
    config = Qwen2VLTextConfig(
        hidden_size=96,
        num_attention_heads=8,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0},
    )
    rotary = Qwen2VLRotaryEmbedding(config)
    positions = torch.stack([torch.arange(50), torch.arange(50) // 2, torch.arange(50) % 7])[:, None].repeat(1, 2, 1)
    ref_cos, ref_sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    no_audio = torch.zeros(2, 50, dtype=torch.bool)
    for cutoff in (0, 3, 6):
        cos, sin = partial_yarn_cos_sin(rotary.inv_freq, positions, positions, no_audio, cutoff, 1.3, [2, 2, 2])
        assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


def test_rope_angles_per_sample_inv_freq_and_errors():
    inv = torch.tensor([[1.0, 0.5], [2.0, 0.25]])
    angles = rope_angles(inv, torch.tensor([[0, 1, 2], [0, 1, 2]]))
    assert angles.tolist() == [[[0, 0], [1, 0.5], [2, 1]], [[0, 0], [2, 0.25], [4, 0.5]]]
    with pytest.raises(ValueError, match="mrope_section"):
        rope_angles(INV_FREQ, torch.zeros(3, 1, 4))
    with pytest.raises(ValueError, match=r"\[1, 1, 1\]"):
        rope_angles(INV_FREQ, torch.zeros(3, 1, 4), [1, 1, 1])
    with pytest.raises(ValueError, match="batch 2"):
        rope_angles(inv, torch.zeros(3, 4))


def test_cos_sin_from_angles_layout_and_scale():
    angles = torch.tensor([[[0.5, 1.0], [2.0, 3.0]]])
    cos, sin = cos_sin_from_angles(angles, torch.tensor([[1.0, 0.5]]))
    assert torch.allclose(cos[0, 1], 0.5 * torch.tensor([math.cos(2), math.cos(3), math.cos(2), math.cos(3)]))
    assert torch.allclose(sin[0, 0], torch.tensor([math.sin(0.5), math.sin(1), math.sin(0.5), math.sin(1)]))
    with pytest.raises(ValueError, match="scale"):
        cos_sin_from_angles(angles, torch.ones(2, 2))


@pytest.mark.parametrize(
    "cutoff, temperature, match",
    [(-1, 1.0, "cutoff"), (5, 1.0, "cutoff"), (2, 0.0, "temperature"), (2, -1.0, "temperature")],
)
def test_partial_yarn_bad_values_raise(cutoff, temperature, match):
    with pytest.raises(ValueError, match=match):
        partial_yarn_cos_sin(
            INV_FREQ, torch.tensor([RAW]), torch.tensor([STRETCHED]), torch.tensor([AUDIO]), cutoff, temperature
        )


def test_partial_yarn_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        partial_yarn_cos_sin(
            INV_FREQ, torch.tensor([RAW]), torch.tensor([STRETCHED[:3]]), torch.tensor([AUDIO]), 0, 1.0
        )


# ----------------------------------------------------------------------------- whole-context baselines


def test_context_factor_is_at_least_one():
    factor = context_factor(torch.tensor([100, 3000, 1500, 0]), 1500)
    assert factor.tolist() == [1.0, 2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="base_audio_tokens"):
        context_factor(torch.tensor([10]), 0)


def test_whole_pi_equals_dividing_positions():
    inv = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    per_sample = whole_pi_inv_freq(inv, torch.tensor([1.0, 4.0]))
    assert per_sample.shape == (2, 8)
    assert torch.equal(per_sample[0], inv)
    positions = torch.arange(100)[None].repeat(2, 1)
    divided = rope_angles(inv, positions.float() / torch.tensor([[1.0], [4.0]]))
    assert torch.allclose(rope_angles(per_sample, positions), divided, atol=1e-5)
    with pytest.raises(ValueError, match="factor"):
        whole_pi_inv_freq(inv, torch.tensor([0.0]))


@pytest.mark.parametrize("factor", [4.0, 2.5])
def test_whole_yarn_equals_transformers_yarn(factor):
    config = LlamaConfig(
        hidden_size=256,
        num_attention_heads=2,
        head_dim=128,
        rope_parameters={
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": 2048,
            "rope_theta": 1e6,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
        },
    )
    ref_inv, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](config)
    inv, scale = whole_yarn_inv_freq(1e6, 128, torch.tensor([factor]), 2048)
    assert inv.shape == (1, 64) and scale.shape == (1,)
    assert torch.equal(inv[0], ref_inv.float())
    assert scale[0].item() == pytest.approx(ref_scale)
    # The three YaRN groups by their closed form: highest frequencies kept, lowest divided by s,
    # attention scaling 0.1 ln(s) + 1.
    default = 1.0 / (1e6 ** (torch.arange(0, 128, 2).float() / 128))
    assert torch.equal(inv[0, :5], default[:5])
    assert torch.allclose(inv[0, -5:], default[-5:] / factor, rtol=1e-6)
    assert scale[0].item() == pytest.approx(0.1 * math.log(factor) + 1.0)


def test_whole_yarn_identity_at_factor_one_and_per_sample_rows():
    config = Qwen2VLTextConfig(
        hidden_size=256,
        num_attention_heads=2,
        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    )
    stock = Qwen2VLRotaryEmbedding(config).inv_freq
    inv, scale = whole_yarn_inv_freq(1e6, 128, torch.tensor([1.0, 4.0, 1.0]), 2048)
    assert torch.equal(inv[0], stock) and torch.equal(inv[2], stock)
    assert scale.tolist()[0] == 1.0 and scale.tolist()[2] == 1.0
    assert not torch.equal(inv[1], stock)
    assert scale[1].item() == pytest.approx(1.0 + 0.1 * math.log(4.0))


def test_whole_yarn_bad_values_raise():
    with pytest.raises(ValueError, match="head_dim"):
        whole_yarn_inv_freq(1e6, 127, torch.tensor([2.0]), 2048)
    with pytest.raises(ValueError, match="factor"):
        whole_yarn_inv_freq(1e6, 128, torch.tensor([float("nan")]), 2048)

"""extension.partial_yarn.stretch_positions / audio_span_offsets against hand-computed positions."""

from __future__ import annotations

import pytest
import torch

from extension.partial_yarn import audio_span_offsets, stretch_positions


def _mask(length: int, *spans: tuple[int, int]) -> torch.Tensor:
    """(1, length) bool mask with True on [start, stop) of each span."""
    mask = torch.zeros(1, length, dtype=torch.bool)
    for start, stop in spans:
        mask[0, start:stop] = True
    return mask


def _close(actual: torch.Tensor, expected: list) -> None:
    expected_t = torch.tensor(expected, dtype=torch.float32)
    assert actual.dtype == torch.float32
    assert actual.shape == expected_t.shape
    assert torch.allclose(actual, expected_t, atol=1e-6, rtol=0), f"{actual.tolist()} != {expected}"


def test_one_span_squeezed_onto_base_and_later_text_follows():
    # span at p=2, n=6, base 3: linspace(2, 4, 6) = 2, 2.4, ..., 4; later tokens move back by n - base = 3
    positions = torch.arange(12)[None]
    out = stretch_positions(positions, _mask(12, (2, 8)), base_audio_tokens=3)
    _close(out, [[0, 1, 2, 2.4, 2.8, 3.2, 3.6, 4, 5, 6, 7, 8]])


def test_offsets_and_remapped_mask():
    offsets, remapped = audio_span_offsets(_mask(12, (2, 8)), base_audio_tokens=3)
    _close(offsets, [[0, 0, 0, 0.6, 1.2, 1.8, 2.4, 3, 3, 3, 3, 3]])
    assert remapped.tolist() == [[False, False] + [True] * 6 + [False] * 4]


def test_two_spans_shifts_accumulate():
    # A: p=1, n=4 -> linspace(1, 2, 4), shift 2; text 5,6 -> 3,4
    # B: raw 7..11 -> starts at 5 after shift, n=5 -> linspace(5, 6, 5), total shift 2 + 3 = 5; text 12,13 -> 7,8
    out = stretch_positions(torch.arange(14)[None], _mask(14, (1, 5), (7, 12)), base_audio_tokens=2)
    _close(out, [[0, 1, 4 / 3, 5 / 3, 2, 3, 4, 5, 5.25, 5.5, 5.75, 6, 7, 8]])


def test_span_shorter_than_base_is_untouched():
    # short span n=2 (< base 3) stays; long span p=4, n=4 -> linspace(4, 6, 4), shift 1
    mask = _mask(10, (1, 3), (4, 8))
    out = stretch_positions(torch.arange(10)[None], mask, base_audio_tokens=3)
    _close(out, [[0, 1, 2, 3, 4, 14 / 3, 16 / 3, 6, 7, 8]])
    _, remapped = audio_span_offsets(mask, 3)
    assert remapped.tolist() == [[False, False, False, False, True, True, True, True, False, False]]


def test_span_exactly_base_long_is_identity():
    positions = torch.arange(9)[None]
    out = stretch_positions(positions, _mask(9, (2, 5)), base_audio_tokens=3)
    assert torch.equal(out, positions.float())


def test_text_only_rows_are_identity():
    positions = torch.arange(7)[None].repeat(2, 1) + 3
    out = stretch_positions(positions, torch.zeros(2, 7, dtype=torch.bool), base_audio_tokens=1)
    assert torch.equal(out, positions.float())


def test_left_padding_and_batch_rows_are_independent():
    # row 0: text, audio n=4 at 1..4, text -> linspace(1, 2, 4), then 3, 4, 5
    # row 1: two pad tokens (position 1, as transformers fills), text 0, audio n=3 at positions 1..3 -> 1, 1.5, 2,
    #        then text 4, 5 -> 3, 4
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [1, 1, 0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    out = stretch_positions(positions, mask, base_audio_tokens=2)
    _close(out, [[0, 1, 4 / 3, 5 / 3, 2, 3, 4, 5], [1, 1, 0, 1, 1.5, 2, 3, 4]])


def test_three_row_mrope_vision_block_after_audio_shifts_on_every_axis():
    # text 0,1; audio p=2 n=6 (base 3 -> linspace(2, 4, 6), shift 3); a 2x2 image (t/h/w differ); text after.
    t = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 10, 11]
    h = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9, 10, 11]
    w = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11]
    positions = torch.tensor([t, h, w])[:, None, :]
    out = stretch_positions(positions, _mask(14, (2, 8)), base_audio_tokens=3)
    audio = [2, 2.4, 2.8, 3.2, 3.6, 4]
    _close(
        out,
        [
            [[0, 1, *audio, 5, 5, 5, 5, 7, 8]],
            [[0, 1, *audio, 5, 5, 6, 6, 7, 8]],
            [[0, 1, *audio, 5, 6, 5, 6, 7, 8]],
        ],
    )


def test_vlat_virtual_longer_than_span_spreads_it_and_moves_later_text_forward():
    # n=4 at p=2, virtual 10: linspace(2, 11, 4) = 2, 5, 8, 11; later tokens move by n - T = -6.
    # VLAT remaps every span, even one shorter than the base.
    out = stretch_positions(torch.arange(8)[None], _mask(8, (2, 6)), base_audio_tokens=100, virtual_audio_tokens=10)
    _close(out, [[0, 1, 2, 5, 8, 11, 12, 13]])


def test_vlat_virtual_shorter_than_span_compresses_it():
    out = stretch_positions(torch.arange(8)[None], _mask(8, (2, 6)), base_audio_tokens=100, virtual_audio_tokens=2.0)
    _close(out, [[0, 1, 2, 7 / 3, 8 / 3, 3, 4, 5]])


def test_vlat_per_sample_virtual_lengths():
    positions = torch.arange(8)[None].repeat(2, 1)
    mask = _mask(8, (2, 6)).repeat(2, 1)
    out = stretch_positions(positions, mask, base_audio_tokens=3, virtual_audio_tokens=torch.tensor([10.0, 2.0]))
    _close(out, [[0, 1, 2, 5, 8, 11, 12, 13], [0, 1, 2, 7 / 3, 8 / 3, 3, 4, 5]])
    _, remapped = audio_span_offsets(mask, 3, torch.tensor([10.0, 2.0]))
    assert torch.equal(remapped, mask)


def test_vlat_virtual_equal_to_span_length_is_exactly_raw():
    positions = torch.arange(5000)[None]
    out = stretch_positions(positions, _mask(5000, (10, 1510)), base_audio_tokens=3, virtual_audio_tokens=1500)
    assert torch.equal(out, positions.float())


def test_vlat_single_token_span_sits_at_its_start():
    # n=1 at p=3, virtual 5: position 3, later tokens move by 1 - 5 = -4
    out = stretch_positions(torch.arange(6)[None], _mask(6, (3, 4)), base_audio_tokens=1, virtual_audio_tokens=5)
    _close(out, [[0, 1, 2, 3, 8, 9]])


def test_span_at_sequence_edges():
    # audio from index 0 (n=4, base 2 -> 0, 1/3, 2/3, 1) and a trailing span (n=3 -> linspace(p, p+1, 3))
    out = stretch_positions(torch.arange(9)[None], _mask(9, (0, 4), (6, 9)), base_audio_tokens=2)
    _close(out, [[0, 1 / 3, 2 / 3, 1, 2, 3, 4, 4.5, 5]])


def _reference(positions: list[float], mask: list[bool], base: int) -> list[float]:
    """Straightforward per-span loop, the method note's statement verbatim."""
    out, shift, i = [], 0.0, 0
    while i < len(mask):
        if not mask[i]:
            out.append(positions[i] - shift)
            i += 1
            continue
        j = i
        while j < len(mask) and mask[j]:
            j += 1
        n, p = j - i, positions[i] - shift
        if n >= base:
            out += [p + k * (base - 1) / (n - 1) if n > 1 else p for k in range(n)]
            shift += n - base
        else:
            out += [p + k for k in range(n)]
        i = j
    return out


def test_long_random_sequences_match_a_per_span_loop():
    gen = torch.Generator().manual_seed(0)
    batch, length, base = 3, 12000, 40
    # random runs: alternate text and audio runs of random lengths
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        i, audio = 0, False
        while i < length:
            run = int(torch.randint(1, 200, (1,), generator=gen))
            mask[b, i : i + run] = audio
            i, audio = i + run, not audio
    positions = torch.arange(length)[None].repeat(batch, 1) + torch.tensor([[0], [5], [17]])
    out = stretch_positions(positions, mask, base)
    for b in range(batch):
        expected = torch.tensor(_reference(positions[b].tolist(), mask[b].tolist(), base), dtype=torch.float64)
        assert torch.allclose(out[b].double(), expected, atol=1e-3, rtol=0)
    assert mask.sum() > 1000 and (out != positions).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(audio_mask=torch.zeros(1, 4, dtype=torch.long), base_audio_tokens=2), "bool"),
        (dict(audio_mask=torch.zeros(1, 5, dtype=torch.bool), base_audio_tokens=2), r"\(1, 5\)"),
        (dict(audio_mask=torch.zeros(1, 4, dtype=torch.bool), base_audio_tokens=0), "base_audio_tokens"),
        (dict(audio_mask=torch.zeros(1, 4, dtype=torch.bool), base_audio_tokens=2.5), "base_audio_tokens"),
        (dict(audio_mask=torch.zeros(1, 4, dtype=torch.bool), base_audio_tokens=2, virtual_audio_tokens=0.5), "0.5"),
        (
            dict(
                audio_mask=torch.zeros(1, 4, dtype=torch.bool), base_audio_tokens=2, virtual_audio_tokens=torch.ones(3)
            ),
            "virtual_audio_tokens",
        ),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stretch_positions(torch.arange(4)[None], **kwargs)


def test_bad_position_shape_raises():
    with pytest.raises(ValueError, match="position_ids"):
        stretch_positions(torch.arange(4)[None, None].repeat(2, 1, 1), torch.zeros(1, 4, dtype=torch.bool), 2)

"""The offline Whisper tiny.en folder (`audio_adapter.pretrained.offline_parts`, from CTranslate2's model.bin) and the
cache of ``python -m scripts.offline_parts``.

Which test catches a swapped q/k/v split of CTranslate2's fused projections: `test_every_whisper_tensor_equals_
its_ctranslate2_source` (the layout as stated here) and, independently of any statement of the layout,
`test_encoder_and_greedy_tokens_equal_ctranslate2s_own` (CTranslate2's runtime reading the same file);
`test_the_ctranslate2_comparison_catches_a_swapped_q_k` shows that comparison fails when q and k are swapped.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import SENTENCES, speech, word_errors

MAX_WER = 0.20  # measured 6 errors / 44 words = 0.136 (2026-12-02); a broken conversion transcribes nothing right


@pytest.fixture(scope="module")
def ct2(offline_parts):
    from audio_adapter.pretrained.offline_parts import whisper_source
    from audio_adapter.pretrained.offline_parts.ctranslate2_file import read_ctranslate2_model

    return read_ctranslate2_model(whisper_source() / "model.bin")


@pytest.fixture(scope="module")
def features(offline_parts):
    """Log-mel (6, 80, 3000) of the eSpeak sentences, by transformers' own WhisperFeatureExtractor."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(str(offline_parts["whisper"]))
    return extractor([speech(s) for s in SENTENCES], sampling_rate=16000, return_tensors="pt").input_features


@pytest.fixture(scope="module")
def whisper(offline_parts):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(str(offline_parts["whisper"]), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def greedy_tokens(whisper, features) -> list[list[int]]:
    """Our greedy transcription tokens of each sentence (prompt and end-of-text left out)."""
    with torch.no_grad():
        out = whisper.generate(features, attention_mask=torch.ones(features.shape[0], 3000), max_new_tokens=40)
    return [[t for t in row if t != whisper.generation_config.eos_token_id] for row in out.tolist()]


# ====================================================================================== the folder
def test_stock_transformers_loads_the_whisper_folder_completely(offline_parts):
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = offline_parts["whisper"]
    model, info = WhisperForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.float16
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads) == (384, 4, 4, 6)
    assert (c.num_mel_bins, c.vocab_size, c.max_source_positions, c.max_target_positions) == (80, 51864, 1500, 448)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied
    assert WhisperFeatureExtractor.from_pretrained(str(folder)).feature_size == 80
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert len(tokenizer) == 51864 and tokenizer.convert_tokens_to_ids("<|30.00|>") == 51863
    ids = {
        t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    }
    assert ids == {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|notimestamps|>": 50362}
    gen = json.loads((folder / "generation_config.json").read_text())
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["no_timestamps_token_id"]) == (50257, 50256, 50362)
    assert gen["is_multilingual"] is False and "lang_to_id" not in gen  # English-only: no language token
    assert tokenizer.decode([5492, 1210, 572, 262, 7588, 13]) == "Please turn off the lights."


def _ct2_source(key: str) -> tuple[str, int, int]:
    """This test's own statement of CTranslate2's Whisper layout: (variable, part, parts) for a transformers key;
    fused projections are split into equal row blocks (self-attention linear_0 = q|k|v, cross-attention
    linear_1 = k|v)."""
    m = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if not m:
        top = {
            "model.encoder.embed_positions.weight": "encoder/position_encodings/encodings",
            "model.decoder.embed_positions.weight": "decoder/position_encodings/encodings",
            "model.decoder.embed_tokens.weight": "decoder/embeddings/weight",
        }
        if key in top:
            return top[key], 0, 1
        name = re.sub(r"^model\.", "", key).replace(".", "/")
        return (
            re.sub(r"layer_norm/weight$", "layer_norm/gamma", re.sub(r"layer_norm/bias$", "layer_norm/beta", name)),
            0,
            1,
        )
    side, i, module, kind = m.groups()
    part = {"weight": "weight", "bias": "bias"}[kind]
    if module.endswith("layer_norm"):
        part = "gamma" if kind == "weight" else "beta"
    block = {
        "self_attn_layer_norm": ("self_attention/layer_norm", 0, 1),
        "encoder_attn_layer_norm": ("attention/layer_norm", 0, 1),
        "final_layer_norm": ("ffn/layer_norm", 0, 1),
        "self_attn.q_proj": ("self_attention/linear_0", 0, 3),
        "self_attn.k_proj": ("self_attention/linear_0", 1, 3),
        "self_attn.v_proj": ("self_attention/linear_0", 2, 3),
        "self_attn.out_proj": ("self_attention/linear_1", 0, 1),
        "encoder_attn.q_proj": ("attention/linear_0", 0, 1),
        "encoder_attn.k_proj": ("attention/linear_1", 0, 2),
        "encoder_attn.v_proj": ("attention/linear_1", 1, 2),
        "encoder_attn.out_proj": ("attention/linear_2", 0, 1),
        "fc1": ("ffn/linear_0", 0, 1),
        "fc2": ("ffn/linear_1", 0, 1),
    }[module]
    return f"{side}/layer_{i}/{block[0]}/{part}", block[1], block[2]


def test_every_whisper_tensor_equals_its_ctranslate2_source(offline_parts, ct2):
    ours = load_file(str(offline_parts["whisper"] / "model.safetensors"))
    used = 0
    for key, tensor in ours.items():
        name, part, parts = _ct2_source(key)
        source = torch.from_numpy(ct2.variables[name].copy())
        rows = source.shape[0] // parts
        assert tensor.dtype == source.dtype == torch.float16, key
        assert torch.equal(tensor, source[part * rows : (part + 1) * rows]), key
        used += tensor.numel()
    zero_k_biases, d = 0, 384
    for name, array in ct2.variables.items():
        if re.search(r"/self_attention/linear_0/bias$", name):
            k = array[d : 2 * d]  # q|k|v
        elif re.search(r"/attention/linear_1/bias$", name):
            k = array[:d]  # k|v of cross-attention
        else:
            continue
        assert not np.any(k), name  # transformers' k_proj has no bias: nothing is dropped
        zero_k_biases += d
    assert zero_k_biases == 12 * d  # 4 encoder + 4 decoder self-attentions, 4 cross-attentions
    stored = sum(a.size for n, a in ct2.variables.items() if a.ndim and n not in ct2.aliases)
    assert used + zero_k_biases == stored  # every stored value lands somewhere
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"} and "proj_out.weight" not in ours


def test_whisper_transcribes_espeak_speech_within_the_stated_wer(greedy_tokens, offline_parts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(offline_parts["whisper"]))
    texts = tokenizer.batch_decode(greedy_tokens, skip_special_tokens=True)
    errors = [word_errors(ref, hyp) for ref, hyp in zip(SENTENCES, texts)]
    wer = sum(e for e, _ in errors) / sum(n for _, n in errors)
    assert texts[0].strip() == "Please turn off the light in the kitchen.", texts
    assert texts[3].strip() == "Open the window and let the fresh air in.", texts
    assert wer <= MAX_WER, list(zip(SENTENCES, texts))


# ====================================================================================== CTranslate2 itself
@pytest.fixture(scope="module")
def ct2_whisper(offline_parts):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="the ctranslate2 wheel is not installed (optional)")
    from audio_adapter.pretrained.offline_parts import whisper_source

    return ctranslate2, ctranslate2.models.Whisper(
        str(whisper_source()), device="cpu", compute_type="float32", intra_threads=2
    )


def _ct2_encode(ct2_whisper, features: torch.Tensor) -> torch.Tensor:
    ctranslate2, model = ct2_whisper
    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features.numpy())), to_cpu=True)
    return torch.from_numpy(np.array(out))


ENCODER_ATOL = 1e-3  # both run the fp16 weights in float32; measured max |diff| 1.8e-5 on values up to 12.5


def test_encoder_and_greedy_tokens_equal_ctranslate2s_own(ct2_whisper, whisper, features, greedy_tokens):
    ctranslate2, model = ct2_whisper
    with torch.no_grad():
        ours = whisper.model.encoder(features[:2]).last_hidden_state
    assert (ours - _ct2_encode(ct2_whisper, features[:2])).abs().max() <= ENCODER_ATOL
    prompt = [[50257, 50362]] * len(features)  # <|startoftranscript|><|notimestamps|>
    results = model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features.numpy())), prompt, beam_size=1, max_length=42
    )
    assert [r.sequences_ids[0] for r in results] == greedy_tokens


def test_the_ctranslate2_comparison_catches_a_swapped_q_k(ct2_whisper, offline_parts, features):
    from transformers import WhisperForConditionalGeneration

    broken = WhisperForConditionalGeneration.from_pretrained(str(offline_parts["whisper"]), dtype=torch.float32)
    attn = broken.model.encoder.layers[0].self_attn
    with torch.no_grad():
        q = attn.q_proj.weight.clone()
        attn.q_proj.weight.copy_(attn.k_proj.weight)
        attn.k_proj.weight.copy_(q)
        attn.q_proj.bias.zero_()  # k_proj has no bias: the swap moves q's bias away
        out = broken.model.encoder(features[:1]).last_hidden_state
    assert (out - _ct2_encode(ct2_whisper, features[:1])).abs().max() > 100 * ENCODER_ATOL


# ====================================================================================== the cache
def test_second_run_of_the_cli_changes_nothing(offline_parts, capsys):
    from scripts import offline_parts as cli

    root = offline_parts["vlm"].parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert cli.main(["--out", str(root)]) == offline_parts
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert "whisper: " in capsys.readouterr().out


def test_a_folder_it_did_not_write_is_refused(tmp_path):
    from audio_adapter.pretrained.offline_parts import WHISPER_DIR, build_offline_parts

    (tmp_path / WHISPER_DIR).mkdir()
    (tmp_path / WHISPER_DIR / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not written by offline_parts"):
        build_offline_parts(tmp_path)
    assert (tmp_path / WHISPER_DIR / "notes.txt").read_text() == "mine"


def test_an_interrupted_conversion_leaves_no_folder_and_an_outdated_one_is_rebuilt(tmp_path):
    from audio_adapter.pretrained.offline_parts import MARKER, _build_one, is_complete, whisper_source
    from audio_adapter.pretrained.offline_parts.ctranslate2_whisper import write_whisper_folder

    folder = tmp_path / "whisper"

    def killed(source, out):
        write_whisper_folder(source, out)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _build_one(folder, whisper_source(), killed)
    assert list(tmp_path.iterdir()) == []
    assert _build_one(folder, whisper_source(), write_whisper_folder) and is_complete(folder, whisper_source())
    assert not _build_one(folder, whisper_source(), write_whisper_folder)  # complete: left alone
    stamp = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**stamp, "converter_version": 0}))
    assert _build_one(folder, whisper_source(), write_whisper_folder) and is_complete(folder, whisper_source())


def test_a_copy_published_first_by_a_concurrent_builder_is_kept(tmp_path):
    from audio_adapter.pretrained.offline_parts import _build_one, _publish, is_complete

    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"1234")

    def writer(text):
        def write(src, out):
            out.mkdir()
            (out / "part.txt").write_text(text)

        return write

    folder = tmp_path / "part"
    assert _build_one(folder, source, writer("first"))
    late = tmp_path / ".tmp-part-late"
    writer("second")(source, late)
    _publish(late, folder, source)  # what the slower of two builders does once its copy is written
    assert (folder / "part.txt").read_text() == "first" and is_complete(folder, source)
    (source / "weights.bin").write_bytes(b"12345")  # the source changed: the folder is outdated, rebuilt
    assert _build_one(folder, source, writer("third")) and (folder / "part.txt").read_text() == "third"

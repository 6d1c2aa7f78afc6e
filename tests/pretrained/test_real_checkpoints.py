"""The README's real-checkpoint path, proven against offline replicas of the two hub repositories.

`make_hub_replicas` writes Qwen2-VL-7B-Instruct and whisper-large-v3-turbo file for file (real configs, the real
tokenizer without audio tokens, the real chat template and generation settings, bf16 legacy-named sharded
weights, a full fp16 Whisper) at tiny widths. Everything a user is told to run with real checkpoints runs here:
the README block as written, the CLIs on the folder it saves, and every ``qwen2vl7b_*`` recipe.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from audio_adapter.processing.tokenizer import AUDIO_SPECIAL_TOKENS, QWEN2_VL_SPECIAL_TOKENS
from audio_adapter.testing.hub_replicas import QWEN2_VL_GENERATION_CONFIG
from tests.helpers import tone_clip

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS = (
    'VLM, WHISPER = "Qwen/Qwen2-VL-7B-Instruct", "openai/whisper-large-v3-turbo"  # hub ids or local copies',
    'DEVICE, DTYPE, MAX_NEW_TOKENS = "cuda", torch.bfloat16, 256  # on a CPU: "cpu", torch.float32',
)
ASSEMBLED = "ckpt/audio-qwen2vl-7b"


def readme_real_checkpoint_block() -> str:
    """The python block of the README section "Using it with real checkpoints"."""
    text = README.read_text()
    section = text[text.index("## Using it with real checkpoints") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def replica_state(directory: Path) -> dict[str, torch.Tensor]:
    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def assert_vlm_tensors_bit_equal(state: dict, replica: dict, audio_rows: list[int]) -> None:
    """Every legacy-named replica tensor is in the model's ``state`` (transformers' key renames), bit-equal in bf16;
    the embedding and lm_head rows of the 3 new audio tokens (``audio_rows``) are the mean of the known rows."""
    for key, tensor in replica.items():
        ours = state[re.sub(r"^visual\.", "model.visual.", re.sub(r"^model\.(?!visual)", "model.language_model.", key))]
        assert ours.dtype == tensor.dtype == torch.bfloat16, key
        if key in ("model.embed_tokens.weight", "lm_head.weight"):  # the 3 new rows take the mean of the known ones
            keep = torch.ones(tensor.shape[0], dtype=torch.bool)
            keep[audio_rows] = False
            assert torch.equal(ours[keep], tensor[keep]), key
            mean = tensor[: audio_rows[0]].float().mean(0).to(torch.bfloat16)
            assert torch.equal(ours[audio_rows], mean.expand(3, -1)), key
        else:
            assert torch.equal(ours, tensor), key


# ============================================================================================ the replicas
def test_stock_transformers_loads_each_replica_completely(hub_replicas):
    from transformers import (
        AutoTokenizer,
        Qwen2VLForConditionalGeneration,
        WhisperForConditionalGeneration,
    )

    vlm, whisper = hub_replicas["vlm"], hub_replicas["whisper"]
    config = json.loads((vlm / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl" and "text_config" not in config  # flat legacy layout
    assert config["rope_scaling"] == {"type": "mrope", "mrope_section": [16, 24, 24]}
    assert config["vocab_size"] == 152064 and config["tie_word_embeddings"] is False
    assert config["hidden_size"] // config["num_attention_heads"] == 128
    assert (config["bos_token_id"], config["eos_token_id"], config["image_token_id"]) == (151643, 151645, 151655)
    assert json.loads((vlm / "generation_config.json").read_text()) == QWEN2_VL_GENERATION_CONFIG

    files = replica_state(vlm)
    index = json.loads((vlm / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(files) and len(set(index.values())) == 5  # the hub shards it into five files
    assert all(re.match(r"^(model\.(layers|embed_tokens|norm)|visual|lm_head)\.", k) for k in files)
    assert {t.dtype for t in files.values()} == {torch.bfloat16}
    model, info = Qwen2VLForConditionalGeneration.from_pretrained(str(vlm), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.bfloat16 and len(model.state_dict()) == len(files)

    tokenizer = AutoTokenizer.from_pretrained(str(vlm))
    assert len(tokenizer) == 151657
    assert [tokenizer.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIAL_TOKENS] == list(range(151643, 151657))
    assert not any(t in tokenizer.get_vocab() for t in AUDIO_SPECIAL_TOKENS)
    assert tokenizer("Hello world 12").input_ids == [9707, 1879, 220, 16, 17]  # Qwen2 BPE, single digits
    assert tokenizer.padding_side == "right"  # as the fixture asks: the processor must pad left itself

    w_files = load_file(str(whisper / "model.safetensors"))
    assert {t.dtype for t in w_files.values()} == {torch.float16}
    assert any(k.startswith("model.decoder.") for k in w_files)
    w_model, info = WhisperForConditionalGeneration.from_pretrained(str(whisper), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert w_model.config.num_mel_bins == 128 and w_model.config.max_source_positions == 1500
    assert w_model.config.decoder_layers == 4 and w_model.config.vocab_size == 51866
    assert json.loads((whisper / "preprocessor_config.json").read_text())["feature_size"] == 128


# ============================================================================================ the README block
@pytest.fixture(scope="module")
def readme_run(hub_replicas, tmp_path_factory):
    """Run the README block as written in a fresh folder holding ``talk.flac`` and ``slide.png``, with the
    replicas in place of the hub ids and the CPU in place of the GPU. Returns its namespace, folder and stderr."""
    return run_readme_block(readme_real_checkpoint_block(), hub_replicas, tmp_path_factory.mktemp("readme"))


def assert_readme_batch_reproduced(processor, model, ns: dict, keys: tuple[str, ...] = ("input_ids",)) -> None:
    """The README's two-prompt audio + image batch, built again with ``processor``, equals the README run's
    (``ns``) on ``keys``, and greedy ``model.generate`` on it gives the README run's tokens."""
    batch = processor(
        text=ns["prompts"],
        audio=[ns["waveform"], ns["waveform"][: len(ns["waveform"]) // 2]],
        images=[ns["image"]],
        sampling_rate=ns["sr"],
        return_tensors="pt",
    )
    for key in keys:
        assert torch.equal(batch[key], ns["batch"][key]), key
    with torch.no_grad():
        assert torch.equal(model.generate(**batch, max_new_tokens=6), ns["out"])


def run_readme_block(code: str, replicas: dict, work: Path, dtype: str = "torch.bfloat16") -> dict:
    """`readme_run` for a README block ``code`` (its settings lines as in `SETTINGS`) run in ``work`` on the CPU,
    loading in ``dtype`` (the README's own bf16 by default)."""
    from PIL import Image

    for line in SETTINGS:
        assert code.count(line + "\n") == 1, f"README block lost its settings line {line!r}"
    code = code.replace(SETTINGS[0], f'VLM, WHISPER = "{replicas["vlm"]}", "{replicas["whisper"]}"')
    code = code.replace(SETTINGS[1], f'DEVICE, DTYPE, MAX_NEW_TOKENS = "cpu", {dtype}, 6')
    sf.write(str(work / "talk.flac"), tone_clip(2.5, 440.0, sr=44100), 44100)  # a real user's rate: resampled
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(work / "slide.png")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    stderr, stdout = io.StringIO(), io.StringIO()
    namespace: dict = {"__name__": "readme"}
    cwd = os.getcwd()
    try:
        os.chdir(work)
        torch.manual_seed(0)  # the fresh projector is drawn from the global generator: same run whatever ran before
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout), torch.no_grad():
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code, on purpose)
    finally:
        os.chdir(cwd)
        transformers_logger.removeHandler(handler)
    return {"ns": namespace, "dir": work, "stderr": stderr.getvalue(), "stdout": stdout.getvalue(), "records": records}


def test_readme_block_runs_and_generates(readme_run):
    ns = readme_run["ns"]
    model, processor = ns["model"], ns["processor"]
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert processor.tokenizer.convert_tokens_to_ids(AUDIO_SPECIAL_TOKENS[1]) == model.config.audio_token_id == 151658
    inputs, batch, out = ns["inputs"], ns["batch"], ns["out"]
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == 125  # 2.5 s at 50 tokens / s
    assert out.shape == (2, batch["input_ids"].shape[1] + 6)  # the random model never stops early here
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 6  # 56 x 84 -> 4 x 6 patches / 4
    # left padded although the hub tokenizer says right: every row ends on its last prompt token
    assert processor.tokenizer.padding_side == "right"
    assert bool(batch["attention_mask"][:, -1].all()) and not bool(batch["attention_mask"][:, 0].all())
    # the audio tokens are never generated, and the generation config saved with the model says so
    new = out[:, batch["input_ids"].shape[1] :]
    assert not torch.isin(new, torch.tensor([151657, 151658, 151659])).any()
    assert model.generation_config.suppress_tokens == [151657, 151658, 151659]
    printed = readme_run["stdout"].splitlines()
    assert len(printed) == 2 and printed[1].startswith("[")


def test_readme_load_prints_one_summary_line_not_transformers_tables(readme_run):
    lines = [line for line in readme_run["stderr"].splitlines() if line.startswith("audio_adapter: loaded")]
    assert len(lines) == 1 and "46 Qwen2-VL tensors" in lines[0] and "37 Whisper encoder tensors" in lines[0]
    assert "100 decoder tensors skipped" in lines[0]
    assert not [r for r in readme_run["records"] if "LOAD REPORT" in str(r.msg)]


def test_every_replica_tensor_arrives_bit_equal(readme_run, hub_replicas):
    model = readme_run["ns"]["model"]
    state = model.state_dict()
    audio_rows = [151657, 151658, 151659]
    assert_vlm_tensors_bit_equal(state, replica_state(hub_replicas["vlm"]), audio_rows)
    whisper = load_file(str(hub_replicas["whisper"] / "model.safetensors"))
    encoder = {k[len("model.encoder.") :]: v for k, v in whisper.items() if k.startswith("model.encoder.")}
    tower = model.audio_tower.state_dict()
    assert set(tower) == set(encoder)
    for key, tensor in encoder.items():  # fp16 on file, bf16 asked for: exactly the cast of the file's values
        assert torch.equal(tower[key], tensor.to(torch.bfloat16)), key
    assert not any(k.startswith("audio_tower.decoder") for k in state)


def test_batched_generation_equals_one_by_one(readme_run):
    ns = readme_run["ns"]
    model, processor, waveform, sr = ns["model"], ns["processor"], ns["waveform"], ns["sr"]
    model = model.float()  # bf16 matmuls of different batch shapes round differently; the claim is about padding
    try:
        batch = processor(
            text=ns["prompts"],
            audio=[waveform, waveform[: len(waveform) // 2]],
            images=[ns["image"]],
            sampling_rate=sr,
            return_tensors="pt",
        )
        with torch.no_grad():
            together = model.generate(**batch, max_new_tokens=6)[:, batch["input_ids"].shape[1] :]
            singles = []
            for text, audio, images in (
                (ns["prompts"][0], waveform, None),
                (ns["prompts"][1], waveform[: len(waveform) // 2], [ns["image"]]),
            ):
                one = processor(text=[text], audio=[audio], images=images, sampling_rate=sr, return_tensors="pt")
                singles.append(model.generate(**one, max_new_tokens=6)[0, one["input_ids"].shape[1] :])
    finally:
        model.to(torch.bfloat16)
    assert torch.equal(together, torch.stack(singles))


# ============================================================================================ the saved folder
def test_saved_folder_round_trips(readme_run):
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor

    ns, folder = readme_run["ns"], readme_run["dir"] / ASSEMBLED
    reloaded = AudioVLMForConditionalGeneration.from_pretrained(str(folder)).eval()
    processor = AudioVLMProcessor.from_pretrained(folder)
    before, after = ns["model"].state_dict(), reloaded.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert reloaded.generation_config.suppress_tokens == [151657, 151658, 151659]
    assert reloaded.generation_config.top_k == 1  # the hub's settings travel with the model
    assert_readme_batch_reproduced(
        processor, reloaded, ns, keys=("input_ids", "attention_mask", "input_features", "pixel_values")
    )


def test_readme_auto_classes_block_loads_the_saved_folder(readme_run):
    """The README's `AutoProcessor` / `AutoModelForImageTextToText` block, as written, on the folder the README
    block saved: our classes come back and generate what the original pair generated."""
    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor

    text = README.read_text()
    section = text[text.index("### The processor: a transformers `ProcessorMixin`") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert ASSEMBLED in code
    ns, namespace, cwd = readme_run["ns"], {"__name__": "readme"}, os.getcwd()
    try:
        os.chdir(readme_run["dir"])
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code, on purpose)
    finally:
        os.chdir(cwd)
    processor, model = namespace["processor"], namespace["model"].eval()
    assert type(processor) is AudioVLMProcessor and type(model) is AudioVLMForConditionalGeneration
    assert_readme_batch_reproduced(processor, model, ns)


@pytest.fixture(scope="module")
def mcqa(tmp_path_factory):
    from recipes.synthetic.datasets import make_mcqa_dataset

    return make_mcqa_dataset(tmp_path_factory.mktemp("mcqa"), 3, seed=0).manifest


def test_cli_generate_samples_on_the_saved_folder(readme_run, capsys):
    from scripts import generate

    folder, talk = str(readme_run["dir"] / ASSEMBLED), str(readme_run["dir"] / "talk.flac")
    base = [
        "--model",
        folder,
        "--audio",
        talk,
        "--prompt",
        "Summarise the talk.",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
    ]
    sampled = [generate.main(base + ["--do-sample", "--seed", str(s)]) for s in (0, 1)]
    capsys.readouterr()
    # the hub config's top_k 1 / top_p 0.001 would make "--do-sample" greedy (the same text for every seed)
    assert sampled[0] != sampled[1]
    with pytest.raises(SystemExit):
        generate.main(base + ["--top-p", "0.9"])  # sampling settings without --do-sample
    assert "needs --do-sample" in capsys.readouterr().err


def test_cli_assemble_then_eval_sweep_extract(hub_replicas, readme_run, mcqa, tmp_path, capsys):
    from scripts import assemble, eval_mcqa, extract_features, sweep

    folder = str(tmp_path / "assembled")
    assemble.main(
        [
            "--vlm",
            str(hub_replicas["vlm"]),
            "--whisper",
            str(hub_replicas["whisper"]),
            "--out",
            folder,
            "--dtype",
            "bfloat16",
        ]
    )
    with pytest.raises(FileExistsError):  # never overwrites a folder
        assemble.assemble(str(hub_replicas["vlm"]), str(hub_replicas["whisper"]), folder)
    common = ["--model", folder, "--device", "cpu", "--no-progress"]
    result = eval_mcqa.main(
        common + ["--data", str(mcqa), "--out", str(tmp_path / "eval"), "--batch-size", "3", "--max-new-tokens", "3"]
    )
    assert result.n == 3 and json.loads((tmp_path / "eval" / "results.json").read_text())["summary"]["n"] == 3
    points = sweep.main(
        common
        + [
            "--data",
            str(mcqa),
            "--out",
            str(tmp_path / "sweep"),
            "--cutoffs",
            "16",
            "32",
            "--temperatures",
            "1.2",
            "--base-audio-seconds",
            "1",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "2",
        ]
    )
    assert len(points) == 2 and (tmp_path / "sweep" / "sweep.png").is_file()
    index = extract_features.main(
        common
        + ["--audio", str(readme_run["dir"] / "talk.flac"), "--layers", "0", "-1", "--out", str(tmp_path / "feats")]
    )
    saved = load_file(str(tmp_path / "feats" / index["clips"][0]["file"]))
    assert any(t.shape[-1] == 128 for t in saved.values()) and any(t.shape[-1] == 64 for t in saved.values())
    capsys.readouterr()


@pytest.mark.parametrize("which", ["vlm", "whisper"])
def test_clis_refuse_a_raw_hub_checkpoint_before_loading(hub_replicas, which, monkeypatch):
    from audio_adapter import AudioVLMForConditionalGeneration
    from scripts import generate

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the folder was checked")

    monkeypatch.setattr(AudioVLMForConditionalGeneration, "from_pretrained", no_load)
    with pytest.raises(ValueError, match=r"not an assembled audio model.*python -m scripts\.assemble --vlm"):
        generate.main(["--model", str(hub_replicas[which]), "--prompt", "hi", "--device", "cpu"])


def test_a_truly_missing_weight_still_fails_loudly(hub_replicas, readme_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from audio_adapter import load_pretrained_parts
    from audio_adapter.pretrained.loading import CheckpointMismatchError

    broken = tmp_path / "Qwen2-VL-7B-Instruct"
    shutil.copytree(hub_replicas["vlm"], broken)
    index_file = broken / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    victim = "model.layers.1.mlp.down_proj.weight"
    shard = broken / index["weight_map"].pop(victim)
    tensors = load_file(str(shard))
    del tensors[victim]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointMismatchError, match=r"missing \['model\.language_model\.layers\.1\.mlp\.down_proj"):
        load_pretrained_parts(
            str(broken), str(hub_replicas["whisper"]), tokenizer=readme_run["ns"]["processor"].tokenizer
        )

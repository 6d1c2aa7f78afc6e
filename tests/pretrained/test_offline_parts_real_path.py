"""The real-checkpoint path on the two offline parts (`audio_adapter.pretrained.offline_parts`): SmolLM2-135M-Instruct
in the Qwen2-VL layout + Whisper tiny.en. Nothing here is a replica: the tokenizer is SmolLM2's own (49,152 tokens, no
Qwen BPE), the audio has 80 mel bins, and the weights are pretrained (the vision tower and projector excepted).

The README block "Using it with real checkpoints" runs as written on them (only its settings lines changed, as
for the replicas in tests/pretrained/test_real_checkpoints.py); then scripts.assemble + scripts.generate, and the
stage-1 recipe for two steps.
"""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from audio_adapter.processing.tokenizer import AUDIO_SPECIAL_TOKENS
from tests.helpers import speech
from tests.pretrained.test_real_checkpoints import (
    ASSEMBLED,
    assert_readme_batch_reproduced,
    readme_real_checkpoint_block,
    run_readme_block,
)

AUDIO_IDS = [49163, 49164, 49165]  # after SmolLM2's 49,152 tokens and the 11 Qwen2-VL tokens it lacked


def test_processor_from_parts_takes_the_checkpoints_tokenizer_and_80_mel_bins(offline_parts):
    from transformers import AutoTokenizer

    from audio_adapter import AudioVLMProcessor

    processor = AudioVLMProcessor.from_parts(str(offline_parts["vlm"]), str(offline_parts["whisper"]))
    own = AutoTokenizer.from_pretrained(str(offline_parts["vlm"]))
    text = "Hello world 12 three"
    assert processor.tokenizer(text).input_ids == own(text).input_ids == [19556, 905, 216, 33, 34, 1296]
    assert [processor.tokenizer.convert_tokens_to_ids(t) for t in AUDIO_SPECIAL_TOKENS] == AUDIO_IDS
    assert len(processor.tokenizer) == 49166 and processor.n_mels == 80 and processor.chunk_seconds == 30.0
    clip = speech("three one seven")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is said?"}]}],
        add_generation_prompt=True,
    )
    # the checkpoint's own default system prompt (SmolLM2's), in the audio chat template
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face")
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>What is said?<|im_end|>" in prompt
    inputs = processor(text=[prompt], audio=[clip], sampling_rate=16000)
    assert inputs["input_features"].shape == (1, 80, 3000)
    assert int((inputs["input_ids"] == AUDIO_IDS[1]).sum()) == processor.audio_token_count(len(clip))


def test_the_audio_chat_template_keeps_a_checkpoints_default_system_prompt():
    from audio_adapter.processing.tokenizer import CHAT_TEMPLATE, audio_chat_template
    from audio_adapter.testing.hub_replicas import QWEN2_VL_CHAT_TEMPLATE

    for qwen in (QWEN2_VL_CHAT_TEMPLATE, None, "{{ messages }}"):
        assert audio_chat_template(qwen) == CHAT_TEMPLATE  # Qwen2-VL's (and Qwen2.5-VL's) prompt is CHAT_TEMPLATE's own
    smollm2_gguf = (  # the start of the template in SmolLM2's GGUF file
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    )
    ours = audio_chat_template(smollm2_gguf)
    assert ours == CHAT_TEMPLATE.replace(
        "You are a helpful assistant.", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )


# ============================================================================================ the README block
@pytest.fixture(scope="module")
def readme_run(offline_parts, tmp_path_factory):
    parts = {name: str(path) for name, path in offline_parts.items()}
    # float32, as the README says for a CPU: bf16 matmuls without bf16 units took this block 66 s on an AVX2
    # CPU (the replica tests keep the README's bf16)
    work = tmp_path_factory.mktemp("readme-parts")
    return run_readme_block(readme_real_checkpoint_block(), parts, work, dtype="torch.float32")


def test_readme_block_runs_on_the_offline_parts(readme_run):
    ns = readme_run["ns"]
    model, processor, inputs, batch, out = ns["model"], ns["processor"], ns["inputs"], ns["batch"], ns["out"]
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    config = model.config
    assert [config.audio_bos_token_id, config.audio_token_id, config.audio_eos_token_id] == AUDIO_IDS
    assert [processor.tokenizer.convert_tokens_to_ids(t) for t in AUDIO_SPECIAL_TOKENS] == AUDIO_IDS
    assert config.text_config.vocab_size == 49216 and config.audio_config.num_mel_bins == 80
    assert inputs["input_features"].shape[1] == 80
    assert int((inputs["input_ids"] == config.audio_token_id).sum()) == 125  # 2.5 s at 50 tokens / s
    assert int((batch["input_ids"] == config.image_token_id).sum()) == 6
    new = out[:, batch["input_ids"].shape[1] :]
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 6  # may end early: the real LM says <|im_end|>
    assert not torch.isin(new, torch.tensor(AUDIO_IDS)).any()
    assert model.generation_config.suppress_tokens == AUDIO_IDS
    printed = readme_run["stdout"].splitlines()
    assert len(printed) == 2 and printed[0].strip() and printed[1].startswith("[")
    summary = [line for line in readme_run["stderr"].splitlines() if line.startswith("audio_adapter: loaded")]
    assert len(summary) == 1 and "394 Qwen2-VL tensors" in summary[0] and "67 Whisper encoder tensors" in summary[0]


def test_the_saved_folder_reloads_and_generates_the_same(readme_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from audio_adapter import AudioVLMForConditionalGeneration, AudioVLMProcessor

    ns, folder = readme_run["ns"], readme_run["dir"] / ASSEMBLED
    model = AutoModelForImageTextToText.from_pretrained(str(folder)).eval()
    processor = AutoProcessor.from_pretrained(str(folder))
    assert type(model) is AudioVLMForConditionalGeneration and type(processor) is AudioVLMProcessor
    assert processor.n_mels == 80 and len(processor.tokenizer) == 49166
    saved = json.loads((folder / "config.json").read_text())
    assert saved["audio_token_id"] == AUDIO_IDS[1] and saved["audio_config"]["num_mel_bins"] == 80
    assert_readme_batch_reproduced(processor, model, ns)


# ============================================================================================ the CLIs and a recipe
def test_clis_on_a_folder_assembled_from_the_offline_parts(offline_parts, tmp_path, capsys):
    from recipes.synthetic.datasets import make_mcqa_dataset
    from scripts import assemble, eval_mcqa, extract_features, generate

    folder = tmp_path / "assembled"
    assemble.main(
        ["--vlm", str(offline_parts["vlm"]), "--whisper", str(offline_parts["whisper"]), "--out", str(folder)]
    )  # the checkpoints' own dtypes: float32 LM (bf16 matmuls are slow on a CPU without them), fp16 -> fp32 Whisper
    sf.write(str(tmp_path / "say.flac"), speech("Please turn off the lights in the kitchen."), 16000)
    common = ["--model", str(folder), "--device", "cpu"]
    text = generate.main(
        common + ["--audio", str(tmp_path / "say.flac"), "--prompt", "What is said?", "--max-new-tokens", "4"]
    )
    assert isinstance(text, str) and text.strip()
    mcqa = make_mcqa_dataset(tmp_path / "mcqa", 2, seed=0).manifest
    result = eval_mcqa.main(
        common
        + ["--no-progress", "--data", str(mcqa), "--out", str(tmp_path / "eval"), "--batch-size", "2"]
        + ["--max-new-tokens", "2"]
    )
    assert result.n == 2
    index = extract_features.main(
        common
        + ["--no-progress", "--audio", str(tmp_path / "say.flac"), "--layers", "0", "-1"]
        + ["--out", str(tmp_path / "feats")]
    )
    saved = load_file(str(tmp_path / "feats" / index["clips"][0]["file"]))
    assert {t.shape[-1] for t in saved.values()} >= {384, 576}  # Whisper tiny.en frames, projected to SmolLM2
    assert "assembled checkpoint written to" in capsys.readouterr().out


def test_stage1_recipe_trains_two_steps_on_the_offline_parts(offline_parts, tmp_path, monkeypatch):
    from scripts.train import main as train_main
    from tests.helpers import make_shards
    from tests.training.test_real_recipes import CONFIGS

    # float32 without gradient checkpointing: the recipe's bf16-mixed took 63 s for two steps on an AVX2 CPU
    # (no native bf16 matmul), float32 8 s; the recipe's own settings are what tests/training/test_real_recipes.py runs.
    shards = make_shards(tmp_path / "data", num=2, seed=0, maxcount=2)["glob"]
    monkeypatch.chdir(tmp_path)
    cli = train_main(
        ["fit", "--config", str(CONFIGS / "qwen2vl7b_stage1.yaml")]
        + [f"--model.vlm={offline_parts['vlm']}", f"--model.whisper={offline_parts['whisper']}"]
        + [f"--data.train_shards={shards}", f"--data.val_shards={shards}", "--data.batch_size=1"]
        + ["--data.num_workers=0", "--data.shuffle_buffer=2", "--trainer.accelerator=cpu", "--trainer.max_steps=2"]
        + ["--trainer.num_sanity_val_steps=0", "--trainer.precision=32-true", "--model.dtype=float32"]
        + ["--model.gradient_checkpointing=false"]
    )
    assert cli.trainer.global_step == 2
    net = cli.model.audio_vlm
    assert net.audio_projector.weight.shape == (576, 384)  # Whisper tiny.en width -> SmolLM2 width
    trained = load_file(str(tmp_path / "runs/qwen2vl7b/stage1/output/projector.safetensors"))
    assert torch.isfinite(trained["audio_projector.weight"]).all()
    loss = float(cli.trainer.callback_metrics["train/loss"])
    # measured 6.1: the pretrained LM (projector still random) is far better than chance, log(49216) = 10.8
    assert 0.0 < loss < math.log(49216)

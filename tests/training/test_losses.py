"""The loss seam (`recipes.losses`): the default `CrossEntropy` reproduces the stock forward's loss curve,
`TextTeacherKL`'s teacher pass never gets a gradient (stage 2: LoRA off during it, on again after), its KL is zero
exactly when the student hears what the teacher reads and falls when trained, resume stays bit-exact, both tiny
stages train with it from a YAML switch, and `build_loss` names what is wrong with a spec."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from audio_adapter.testing import TINY_3S
from recipes.data.collate import AudioCollator, model_inputs
from recipes.data.samples import normalize_messages
from recipes.losses import CrossEntropy, Loss, TextTeacherKL, build_loss
from recipes.losses import teacher as teacher_mod
from recipes.synthetic.datasets import notes_entry_fields, notes_sample
from recipes.training.checkpointing import AtomicCheckpointIO
from recipes.training.module import AudioVLMLightningModule
from scripts.train import main as train_main
from tests.helpers import (
    StepRecorder,
    datamodule,
    good_sample,
    make_shards,
    single_thread,  # noqa: F401  (autouse: 1 intra-op thread)
    tone_clip,
    trainable_state,
    trainer,
    write_shard,
)

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _module(stage: int = 1, loss: Loss | dict | None = None, **kwargs) -> AudioVLMLightningModule:
    return AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=stage, loss=loss, **kwargs)


def _samples(n: int, seed: int = 0) -> list[dict]:
    """``n`` decoded notes samples (what the shard reader yields) with their transcripts."""
    out = []
    for i in range(n):
        s = notes_sample(seed, i)
        fields = notes_entry_fields(s)
        messages = normalize_messages({"prompt": fields["prompt"], "response": fields["response"]})
        audio = torch.from_numpy(s["audio"])
        out.append({"key": s["key"], "audio": audio, "messages": messages, "transcript": fields["transcript"]})
    return out


def _perturb_lora(module: AudioVLMLightningModule) -> None:
    """LoRA's B starts at zero (a no-op adapter): give it weights, so an adapter left on would show."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


# ------------------------------------------------------------------------------------------ the teacher pass
@pytest.mark.parametrize("stage", [1, 2])
def test_teacher_pass_gets_no_gradient_and_runs_without_lora(stage):
    from peft.tuners.lora import LoraLayer

    module = _module(stage, TextTeacherKL(temperature=2.0, weight=1.0, ce_weight=0.0), lora_dropout=0.1)
    if stage == 2:
        _perturb_lora(module)
    lora = [m for m in module.model.modules() if isinstance(m, LoraLayer)]
    assert (len(lora) > 0) == (stage == 2)
    batch = AudioCollator(module.processor, text_twin=True)(_samples(2))
    outputs = module.model(**model_inputs(batch), use_cache=False)  # the student, with the audio

    seen = []

    def spy(mod, args, kwargs, output):  # the only forward of module.model inside the loss is the teacher's
        off = [layer.disable_adapters for layer in lora]
        seen.append({"grad": torch.is_grad_enabled(), "training": mod.training, "lora_off": off, "out": output})

    handle = module.model.register_forward_hook(spy, with_kwargs=True)
    try:
        loss, logs = module.loss_fn(module, batch, outputs)
    finally:
        handle.remove()
    assert len(seen) == 1 and not seen[0]["grad"] and not seen[0]["training"]
    teacher = seen[0]["out"].logits
    assert teacher.grad_fn is None and not teacher.requires_grad
    assert all(seen[0]["lora_off"])  # stage 2: every adapter was off during the teacher pass ...
    assert module.model.training and not any(layer.disable_adapters for layer in lora)  # ... and is on again

    twin = {k: batch["text_twin"][k] for k in teacher_mod.TWIN_MODEL_INPUTS}
    module.eval()
    with torch.no_grad():
        as_is = module.model(**twin, use_cache=False).logits  # adapters as they are (on)
        if stage == 2:
            with module.model.disable_adapter():
                base = module.model(**twin, use_cache=False).logits
            assert torch.equal(teacher, base) and not torch.allclose(teacher, as_is)  # the LM before LoRA
        else:
            assert torch.equal(teacher, as_is)
    module.train()

    loss.backward()  # the KL's gradient reaches the student's trainable tensors only
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert torch.equal(loss, logs["kl"])


def _transcript(tokenizer, n_tokens: int) -> tuple[str, list[int]]:
    """A transcript of exactly ``n_tokens`` tokens (tokenised alone, as the text twin does) and its ids."""
    ids = tokenizer("C4 E4 G4 A4 C5 D4 F4 B4 " * 40, add_special_tokens=False)["input_ids"]
    for cut in range(n_tokens, n_tokens + 8):
        text = tokenizer.decode(ids[:cut]).strip()
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(got) == n_tokens:
            return text, got
    raise AssertionError(f"no transcript of {n_tokens} tokens")


@pytest.mark.parametrize("heard", ["transcript", "audio"])
def test_kl_is_zero_exactly_when_the_audio_embeds_are_the_transcripts(heard, monkeypatch):
    """The student's audio span (<|audio_bos|>, n audio tokens, <|audio_eos|>) is made to embed as the transcript's
    n + 2 tokens: the projector's output is stubbed to the inner transcript tokens' embedding rows, the two marker
    rows are moved onto the first and last ones' (stage 1's trainable delta). Same embeddings at the same
    positions: the teacher reading the transcript and the student hearing it predict alike. With the projector's
    own output for the clip (``audio``) the KL is not zero."""
    module = _module(1, TextTeacherKL(temperature=2.0, weight=1.0, ce_weight=0.0))
    audio_vlm, tok = module.audio_vlm, module.processor.tokenizer
    sample = _samples(1)[0]
    sample["audio"] = torch.from_numpy(tone_clip(0.4))
    n = int(AudioCollator(module.processor)([sample])["audio_token_counts"][0])
    sample["transcript"], text_ids = _transcript(tok, n + 2)
    batch = AudioCollator(module.processor, text_twin=True)([sample])
    assert batch["text_twin"]["input_ids"].shape == batch["input_ids"].shape  # the same positions

    emb = audio_vlm.get_input_embeddings().weight.detach()
    rows = emb[text_ids].float()
    if heard == "transcript":
        monkeypatch.setattr(audio_vlm, "get_audio_features", lambda features, mask=None: rows[1:-1])
    bos, _, eos = module.audio_token_rows.token_ids.tolist()
    with torch.no_grad():
        module.audio_token_rows.delta[0] = rows[0] - emb[bos].float()
        module.audio_token_rows.delta[2] = rows[-1] - emb[eos].float()

    outputs = module.model(**model_inputs(batch), use_cache=False)
    _, logs = module.loss_fn(module, batch, outputs)
    kl = float(logs["kl"])  # measured: ~1e-9 (float noise) vs ~2e-3
    if heard == "transcript":
        assert abs(kl) < 1e-6, kl  # ~1e-9 to 1.6e-7 by CPU kernel; the real audio's KL is ~2e-3
    else:
        assert kl > 1e-4, kl


# ------------------------------------------------------------------------------------------ training with it
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("losses_data"), num=8, seed=6, maxcount=4)


def test_a_few_steps_lower_the_kl(shards):
    rec = StepRecorder()  # with ce_weight 0 and weight 1 the training loss is the KL itself
    module = _module(1, TextTeacherKL(temperature=1.0, weight=1.0, ce_weight=0.0), lr=1e-3)  # 1e-2 overshoots
    trainer(8, [rec]).fit(module, datamodule(shards["glob"], batch_size=8))  # every step: the same 8 samples
    assert len(rec.losses) == 8 and all(len(keys) == 8 for keys in rec.keys)
    assert all(kl > 0 for kl in rec.losses), rec.losses  # a KL, not its negative (which would "fall" too)
    assert rec.losses[-1] < 0.5 * rec.losses[0], rec.losses
    assert rec.losses[-1] < min(rec.losses[:4]), rec.losses


class Crash(pl.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated kill")


def test_resume_with_text_teacher_kl_is_bit_exact(shards, tmp_path):
    """Stage 2 with LoRA dropout (the global RNG matters) and the teacher pass in eval mode in between: a run
    killed after its mid-epoch checkpoint resumes onto the uninterrupted run's losses and weights, bit for bit."""
    steps, every, crash_at = 5, 3, 4  # 8 samples / batch 4: the checkpoint after step 3 is mid-epoch

    def run(callbacks, ckpt_path=None, checkpointing=True):
        module = _module(2, TextTeacherKL(temperature=2.0, weight=1.0, ce_weight=0.5), lr=5e-3, lora_dropout=0.1)
        if checkpointing:
            callbacks = [*callbacks, ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=every, save_last=True)]
        tr = trainer(steps, callbacks, enable_checkpointing=checkpointing, plugins=[AtomicCheckpointIO()])
        tr.fit(module, datamodule(shards["glob"], batch_size=4, seed=2), ckpt_path=ckpt_path)
        return module

    pl.seed_everything(0)
    whole = StepRecorder()
    whole_state = trainable_state(run([whole], checkpointing=False))
    pl.seed_everything(0)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run([StepRecorder(), Crash(crash_at)])
    pl.seed_everything(123)  # restored from the checkpoint, whatever it is at restart
    resumed = StepRecorder()
    resumed_state = trainable_state(run([resumed], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")))
    assert resumed.steps == list(range(every + 1, steps + 1))
    assert resumed.keys == whole.keys[every:]
    assert resumed.losses == whole.losses[every:], (resumed.losses, whole.losses)
    assert resumed_state.keys() == whole_state.keys()
    assert all(torch.equal(resumed_state[k], whole_state[k]) for k in whole_state)


# ------------------------------------------------------------------------------------------ the CE default
class FullForwardLoss(StepRecorder):
    """Also the stock full forward's ``out.loss`` (all (B, L, V) logits, transformers' loss) on each training
    batch, with the weights the step is about to use: the loss curve before the loss seam."""

    def __init__(self):
        super().__init__()
        self.full: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            self.full.append(float(pl_module.model(**model_inputs(batch), use_cache=False).loss))


class StockForwardLoss(Loss):
    """The training step before the loss seam: the stock forward's own ``out.loss`` on full (B, L, V) logits."""

    needs_full_logits = True

    def __call__(self, module, batch, outputs):
        return outputs.loss, {}


def test_cross_entropy_default_reproduces_the_stock_loss_curve(shards):
    curves = {}
    spec = {"class_path": "recipes.losses.CrossEntropy"}  # as a checkpoint's hparams hold it
    for name, loss in [("none", None), ("instance", CrossEntropy()), ("spec", spec), ("stock", StockForwardLoss())]:
        pl.seed_everything(0)
        rec = FullForwardLoss()
        module = _module(1, loss, lr=1e-2)
        assert type(module.loss_fn) is (StockForwardLoss if name == "stock" else CrossEntropy)
        trainer(4, [rec]).fit(module, datamodule(shards["glob"], batch_size=4, seed=1))
        curves[name] = rec
    ref = curves["none"]
    assert len(set(ref.losses)) == 4  # it trained: four different losses
    for rec in curves.values():  # bit for bit, whichever way CE is chosen, and as the pre-seam training step
        assert rec.keys == ref.keys and rec.losses == ref.losses, (rec.losses, ref.losses)
    assert ref.losses == ref.full, (ref.losses, ref.full)  # the stock forward's loss on the same weights


# ------------------------------------------------------------------------------------------ the YAML switch
SWITCH = """model:
  loss:
    class_path: recipes.losses.TextTeacherKL
    init_args: {temperature: 2.0, weight: 1.0, ce_weight: 0.5}
"""


def _logged(metrics_csv: Path, column: str) -> list[float]:
    with open(metrics_csv, newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


def test_text_teacher_kl_trains_both_tiny_stages_from_a_yaml_switch(tmp_path, monkeypatch):
    """tiny_stage1.yaml then tiny_stage2.yaml (which starts from stage 1's output), each with the switch file
    after it; the data hold 6 samples with a transcript and 2 without (skipped, counted ``no_transcript``)."""
    data = make_shards(tmp_path / "data", num=6, seed=7, maxcount=8)
    no_transcript = [good_sample(9, i) for i in range(2)]  # prompt and response only
    write_shard(tmp_path / "data" / "shards" / "plain-000000.tar", no_transcript)
    (tmp_path / "switch.yaml").write_text(SWITCH)
    monkeypatch.chdir(tmp_path)  # the recipes' relative run folders land here
    for stage in (1, 2):
        cli = train_main(
            [
                "fit",
                f"--config={CONFIGS / f'tiny_stage{stage}.yaml'}",
                "--config=switch.yaml",
                f"--data.train_shards={data['glob']}",
                f"--data.val_shards={data['glob']}",
                "--data.batch_size=8",
                "--data.num_workers=0",
                "--trainer.max_steps=2",
                "--trainer.log_every_n_steps=1",
                "--trainer.limit_val_batches=0",
                "--trainer.callbacks+=tests.helpers.StepRecorder",
            ]
        )
        assert isinstance(cli.model.loss_fn, TextTeacherKL) and cli.model.loss_fn.ce_weight == 0.5
        assert cli.model.stage == stage
        rec = next(c for c in cli.trainer.callbacks if isinstance(c, StepRecorder))
        assert len(rec.keys) == 2 and all(sorted(keys) == sorted(data["keys"]) for keys in rec.keys)
        skips = cli.datamodule.skip_counts  # 2 per batch drawn; the trainer may draw one batch ahead
        assert set(skips) == {"no_transcript"} and skips["no_transcript"] in (4, 6), skips
        kl = _logged(tmp_path / f"runs/tiny/stage{stage}/logs/version_0/metrics.csv", "train/kl")
        assert len(kl) == 2 and all(v > 0 for v in kl), kl
        assert (tmp_path / f"runs/tiny/stage{stage}/output/projector.safetensors").is_file()
    assert (tmp_path / "runs/tiny/stage2/output/adapter").is_dir()


# ------------------------------------------------------------------------------------------ build_loss
@pytest.mark.parametrize(
    "spec, named",
    [
        ({"class_path": "recipes.losses.NoSuchLoss"}, "recipes.losses.NoSuchLoss"),
        ({"class_path": "no_such_package.Loss"}, "no_such_package.Loss"),
        ({"class_path": "torch.nn.Linear"}, "torch.nn.Linear"),  # a class, not a Loss
        ({"class_path": "recipes.losses.build_loss"}, "recipes.losses.build_loss"),  # not a class
        ({"init_args": {}}, "got {'init_args': {}}"),  # no class_path
        ("recipes.losses.CrossEntropy", "got 'recipes.losses.CrossEntropy'"),  # a bare string
        ({"class_path": "recipes.losses.TextTeacherKL", "init_args": {"temprature": 2.0}}, "temprature"),
        ({"class_path": "recipes.losses.TextTeacherKL", "init_args": {"temperature": 0.0}}, "temperature"),
        ({"class_path": "recipes.losses.TextTeacherKL", "init_args": {"weight": -1.0}}, "weight"),
        ({"class_path": "recipes.losses.TextTeacherKL", "init_args": [2.0]}, "[2.0]"),
    ],
)
def test_build_loss_errors_name_the_bad_value(spec, named):
    with pytest.raises(ValueError) as info:
        build_loss(spec)
    assert named in str(info.value), str(info.value)


def test_build_loss_lists_the_settings_of_a_loss_given_a_misspelt_one():
    with pytest.raises(ValueError, match=r"'temprature'.*it takes \['temperature', 'weight', 'ce_weight'\]"):
        build_loss({"class_path": "recipes.losses.TextTeacherKL", "init_args": {"temprature": 2.0}})


def test_build_loss_round_trips_a_spec():
    loss = build_loss({"class_path": "recipes.losses.TextTeacherKL", "init_args": {"temperature": 3.0, "ce_weight": 0}})
    assert isinstance(loss, TextTeacherKL) and (loss.temperature, loss.weight, loss.ce_weight) == (3.0, 1.0, 0.0)
    again = build_loss(loss.spec())
    assert type(again) is TextTeacherKL and again.init_args() == loss.init_args()
    assert build_loss(loss) is loss and type(build_loss(None)) is CrossEntropy

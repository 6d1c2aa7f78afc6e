"""Long jobs print plain progress lines when stdout is not a terminal: on every interval, also during one slow
step (a timer thread), and training runs get them without asking (`ProgressLog` in configure_callbacks)."""

from __future__ import annotations

import io
import re
import time

import pytest

from audio_adapter.testing import TINY_3S
from recipes.common.progress import Heartbeat, ProgressLog, format_elapsed, wants_plain_lines
from recipes.training.module import AudioVLMLightningModule
from tests.helpers import datamodule, make_shards, single_thread, trainer  # noqa: F401


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_only_off_a_terminal():
    assert wants_plain_lines(io.StringIO())
    assert not wants_plain_lines(_Terminal())
    assert not Heartbeat("job", stream=_Terminal()).enabled


def test_a_slow_step_still_prints_a_line_every_interval():
    out = io.StringIO()
    with Heartbeat("stage 2", total=10, interval_s=0.2, stream=out) as beat:
        beat.update(1, loss=0.5)
        time.sleep(0.9)  # one long step: only the timer thread can speak
        beat.update(2, loss=0.25)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[stage 2] step 1/10  loss 0.5000  elapsed ")
    assert sum("step 1/10" in line for line in lines) >= 3  # the first line + at least two beats while stalled
    assert lines[-1].startswith("[stage 2] step 2/10  loss 0.2500") and lines[-1].endswith("done")


def test_heartbeat_refuses_a_bad_interval():
    with pytest.raises(ValueError, match="interval_s must be > 0, got 0"):
        Heartbeat("x", interval_s=0)


def test_elapsed_reads_as_minutes_and_seconds():
    assert (format_elapsed(5.7), format_elapsed(62), format_elapsed(3600)) == ("5s", "1m02s", "60m00s")


def test_training_prints_stage_step_loss_elapsed_to_a_log(tmp_path, capsys):
    shards = make_shards(tmp_path / "data", num=4, seed=0, maxcount=2)
    module = AudioVLMLightningModule("tiny", tiny_overrides=TINY_3S, stage=1, lr=1e-2)
    assert any(isinstance(cb, ProgressLog) for cb in module.configure_callbacks())
    trainer(3).fit(module, datamodule(shards["glob"], batch_size=2))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train stage 1]")]
    assert lines, "no progress line in a non-terminal log"
    assert re.fullmatch(r"\[train stage 1\] step 0/3  elapsed \d+s", lines[0]), lines[0]
    assert re.fullmatch(r"\[train stage 1\] step 3/3  loss \d+\.\d{4}  elapsed \d+s  done", lines[-1]), lines[-1]

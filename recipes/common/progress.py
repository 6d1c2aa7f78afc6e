"""Progress lines for long jobs whose output is a log file, not a terminal.

Rich progress bars draw nothing when stdout is not a terminal (CI logs, ``nohup``, ``> run.log``), so a long
run looked dead for twenty minutes. `Heartbeat` prints one plain line -- job, step/total, loss, elapsed --
whenever work advances and at least every ``interval_s`` seconds from a background thread, so a single slow
step (minutes on a slow CPU) still shows the job is alive. `ProgressLog` is the Lightning callback that every
training run gets (`AudioVLMLightningModule.configure_callbacks`); evaluation loops call `Heartbeat` directly.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import lightning.pytorch as pl

DEFAULT_INTERVAL_S = 20.0  # < 30 s: the promise is a line at least every 30 s


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def wants_plain_lines(stream: TextIO | None = None) -> bool:
    """Whether plain progress lines are needed: the stream is not a terminal (a bar would draw nothing)."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


class Heartbeat:
    """``with Heartbeat("stage 1", total=700) as beat: ... beat.update(step, loss=0.5)``.

    Prints ``[stage 1] step 120/700  loss 0.5320  elapsed 1m02s`` on the first update, then when
    ``interval_s`` passed since the last line (checked on every update and by a timer thread between updates),
    and a final line on exit. Silent when ``enabled`` is False."""

    def __init__(
        self,
        job: str,
        total: int | None = None,
        *,
        unit: str = "step",
        interval_s: float = DEFAULT_INTERVAL_S,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.job, self.total, self.unit, self.interval_s = job, total, unit, interval_s
        self.stream = stream or sys.stdout
        self.enabled = wants_plain_lines(self.stream) if enabled is None else enabled
        self.done, self.info = 0, {}
        self._start = self._last_line = time.monotonic()
        self._lines = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(final=exc[0] is None)

    def start(self) -> None:
        self._start = self._last_line = time.monotonic()
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.job}", daemon=True)
            self._thread.start()

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if final and self.enabled:
            self._print(suffix="done")

    def update(self, done: int, **info: float) -> None:
        """Record progress (``done`` units so far, e.g. ``loss=...``); prints if a line is due."""
        with self._lock:
            self.done, self.info = done, info
        if self.enabled and (self._lines == 0 or time.monotonic() - self._last_line >= self.interval_s):
            self._print()

    def line(self, suffix: str = "") -> str:
        with self._lock:
            done, info = self.done, dict(self.info)
        count = f"{done}/{self.total}" if self.total is not None else str(done)
        parts = [f"[{self.job}] {self.unit} {count}"]
        parts += [
            f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}" for name, value in info.items()
        ]
        parts.append(f"elapsed {format_elapsed(time.monotonic() - self._start)}")
        if suffix:
            parts.append(suffix)
        return "  ".join(parts)

    def _print(self, suffix: str = "") -> None:
        text = self.line(suffix)
        self._last_line = time.monotonic()
        self._lines += 1
        print(text, file=self.stream, flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval_s / 4)):
            if time.monotonic() - self._last_line >= self.interval_s:
                self._print()


class ProgressLog(pl.Callback):
    """A plain progress line per training run at least every ``interval_s`` seconds, rank 0 only, when stdout
    is not a terminal (a terminal has the progress bar)."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, enabled: bool | None = None):
        self.interval_s, self.enabled = interval_s, enabled
        self._beat: Heartbeat | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        job = f"train stage {getattr(pl_module, 'stage', '?')}"
        self._beat = Heartbeat(job, total, interval_s=self.interval_s, enabled=self.enabled)
        self._beat.start()
        self._beat.update(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._beat is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        info = {"loss": float(loss.detach())} if loss is not None and hasattr(loss, "detach") else {}
        self._beat.update(trainer.global_step, **info)

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish(final=True)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._finish(final=False)

    def _finish(self, final: bool) -> None:
        if self._beat is not None:
            self._beat.stop(final=final)
            self._beat = None

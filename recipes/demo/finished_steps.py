"""What a long job's finished steps left behind, so that the same command run again (after a crash, a kill, a
closed laptop) goes on from the first unfinished step instead of starting over.

Each finished step is one JSON file ``<out>/finished/<step>.json`` (written atomically: a step is finished or
absent, never half-written) holding the job's settings and the step's result. A folder whose records were made
with OTHER settings is refused, naming the settings that differ: its data and models are not this job's.
"""

from __future__ import annotations

import json
from pathlib import Path

from recipes.common.atomic import atomic_write_text

FOLDER = "finished"


class FinishedSteps:
    """The finished steps of a job in ``out``, made with ``settings`` (a JSON-able dict)."""

    def __init__(self, out: Path, settings: dict) -> None:
        self.folder = Path(out) / FOLDER
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON (tuples -> lists)
        self.reused: list[str] = []
        for path in sorted(self.folder.glob("*.json")):
            theirs = json.loads(path.read_text())["settings"]
            if theirs != self.settings:
                differ = sorted(k for k in {*theirs, *self.settings} if theirs.get(k) != self.settings.get(k))
                raise ValueError(
                    f"{out} holds steps of a job with other settings ({', '.join(differ)} differ, first in "
                    f"{path.name}): give another output folder, or delete {self.folder} to start over"
                )

    def get(self, step: str):
        """The recorded result of ``step`` (noted in ``reused``), or None when it has not finished."""
        path = self.folder / f"{step}.json"
        if not path.is_file():
            return None
        self.reused.append(step)
        return json.loads(path.read_text())["result"]

    def put(self, step: str, result) -> None:
        """Record ``step`` as finished with its JSON-able ``result``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"{step}.json", json.dumps({"settings": self.settings, "result": result}))

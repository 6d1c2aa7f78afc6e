"""The synthetic task registry (`recipes.synthetic.tasks.TASKS`): a new task is one `SyntheticTask` class plus one
registry entry, and `scripts.make_synthetic` and the demo then offer it; an unknown name is refused naming the
known ones; every registered task has one consistent set of defaults."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from recipes.synthetic.tasks import TASKS, Option, SyntheticTask, get_task, task_names
from scripts import make_synthetic
from tests.helpers import tone_clip

TASK = "chirps"


class Chirps(SyntheticTask):
    """A throw-away task, defined here only: one short tone -> its pitch word."""

    description = "one short tone -> low or high (a test's throw-away task)"
    vocabulary = ("low", "high")
    options = (Option("low_hz", float, 300.0, "pitch of a low tone"), Option("high_hz", float, 900.0, "high tone"))

    def sample(self, seed: int, index: int, **options) -> dict:
        word = self.vocabulary[(seed + index) % 2]
        hz = options["low_hz"] if word == "low" else options["high_hz"]
        audio = tone_clip(0.25, hz, seed=seed * 1000 + index)
        return {"key": f"chirp_{seed}_{index:04d}", "audio": audio, "sampling_rate": 16000, "word": word, "hz": hz}

    def entry_fields(self, sample: dict) -> dict:
        return {"prompt": "Low or high?", "response": sample["word"], "transcript": sample["word"], "hz": sample["hz"]}


@pytest.fixture
def registered(monkeypatch):
    """The one registry line a new task needs (undone after the test)."""
    monkeypatch.setitem(TASKS, TASK, f"{Chirps.__module__}:Chirps")


def test_a_new_task_is_one_class_and_one_registry_line(registered, tmp_path, capsys):
    assert TASK in task_names() and isinstance(get_task(TASK), Chirps)
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic.main(["--help"])
    assert exit_info.value.code == 0 and TASK in capsys.readouterr().out  # listed as a subcommand
    with pytest.raises(SystemExit):
        make_synthetic.main([TASK, "--help"])
    assert "--high-hz" in capsys.readouterr().out  # its options come from its definition

    out = tmp_path / "chirps"
    assert make_synthetic.main([TASK, "--out", str(out), "--num", "4", "--seed", "3", "--high-hz", "1200"]) == 0
    entries = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [e["key"] for e in entries] == [f"chirp_3_{i:04d}" for i in range(4)]
    assert [e["response"] for e in entries] == ["high", "low", "high", "low"]
    assert {e["hz"] for e in entries} == {300.0, 1200.0}  # default low_hz, given --high-hz
    assert all(e["transcript"] == e["response"] and (out / e["audio"]).is_file() for e in entries)
    shards = sorted((out / "shards").glob("train-*.tar"))
    assert len(shards) == 1
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
    assert sorted(Path(n).stem for n in names if n.endswith(".json")) == [e["key"] for e in entries]


def test_the_demo_reads_the_registry(registered):
    from scripts.demo import demo_task

    assert isinstance(demo_task(TASK), Chirps)  # it has a vocabulary: the demo can train on it
    with pytest.raises(ValueError, match="mcqa"):
        demo_task("mcqa")  # registered, but its responses are not words of a vocabulary


def test_an_unknown_task_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(ValueError) as info:
        get_task("nootes")
    assert "nootes" in str(info.value) and all(name in str(info.value) for name in TASKS)
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic.main(["nootes", "--out", "x"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "nootes" in err and all(name in err for name in TASKS)


def test_a_registry_entry_that_is_no_task_is_refused(monkeypatch):
    monkeypatch.setitem(TASKS, "broken", "tests.helpers:tone_clip")
    with pytest.raises(TypeError, match="broken"):
        get_task("broken")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_has_consistent_defaults(name, tmp_path):
    task = get_task(name)
    assert isinstance(task, SyntheticTask) and type(task) is not SyntheticTask and task.description
    names = [o.name for o in task.options]
    assert len(set(names)) == len(names) and all(n.isidentifier() for n in names)
    for o in task.options:
        assert o.default is None or isinstance(o.default, o.type), (name, o)
        assert o.help
    assert task.resolve_options({}) == {o.name: o.default for o in task.options}
    with pytest.raises(ValueError, match="no_such_option"):
        task.resolve_options({"no_such_option": 1})
    assert task.vocabulary is None or (task.vocabulary and all(isinstance(w, str) for w in task.vocabulary))
    assert task.default_split and task.default_split.isidentifier()

    # the CLI: the task's own defaults, and the same common defaults as every other task
    args = make_synthetic.build_parser().parse_args([name, "--out", str(tmp_path)])
    assert {o.name: getattr(args, o.name) for o in task.options} == task.resolve_options({})
    common = {k: getattr(args, k) for k in ("num", "seed", "split", "maxcount", "no_shards")}
    assert common == {"num": 1500, "seed": 0, "split": None, "maxcount": 1000, "no_shards": False}


def test_make_synthetic_offers_exactly_the_registered_tasks(registered):
    parser = make_synthetic.build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "task").choices
    assert list(subcommands) == list(TASKS)

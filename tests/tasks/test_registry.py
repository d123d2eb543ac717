"""The task registry: a task registered from this test file runs through ``egovlp evaluate`` with no CLI change
(the README's "Adding a task" recipe), and ``--help`` lists what is registered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from egovlp.cli.main import build_parser, main
from egovlp.config import at_least
from egovlp.tasks import registry
from egovlp.tasks.registry import TaskSpec, list_tasks, register_task
from egovlp.tasks.shared import encode_texts, table_row


@dataclass(frozen=True)
class SelfMatchData:
    texts: str = ""  # a text file, one sentence a line
    tokenizer: str = ""
    num_frames: int = at_least(1, 4)


@dataclass(frozen=True)
class SelfMatchConfig:
    data: SelfMatchData = field(default_factory=SelfMatchData)
    device: str = "auto"


class SelfMatchEvaluator:
    """R@1 of each sentence retrieving itself among all sentences (dual text features): a task in ~10 lines."""

    def __init__(self, cfg: SelfMatchConfig, tokenizer, model, dist, progress: bool = False) -> None:
        self.texts = [t for t in Path(cfg.data.texts).read_text(encoding="utf-8").splitlines() if t.strip()]
        self.tokenizer, self.dist = tokenizer, dist

    def __call__(self, model) -> dict:
        features = encode_texts(model, self.tokenizer, self.texts, self.dist.device)
        hits = (features @ features.T).argmax(axis=1) == np.arange(len(self.texts))
        return {"R1": 100.0 * float(hits.mean()), "texts": float(len(self.texts))}


@pytest.fixture
def self_match():
    spec = register_task(
        TaskSpec(
            name="self_match",
            description="test task: sentences retrieve themselves",
            eval_schema=SelfMatchConfig,
            make_evaluator=SelfMatchEvaluator,
            format_table=lambda m: f"self-match over {int(m['texts'])} texts\n" + table_row("R@1", [m["R1"]]),
            required=("data.texts", "data.tokenizer"),
        )
    )
    yield spec
    registry._TASKS.pop("self_match")


def test_a_task_registered_from_a_test_runs_through_egovlp_evaluate(self_match, world, tiny_weights, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("picks up the red cube\nputs down the blue ball\npulls the green cone\n")
    out = tmp_path / "r.json"
    argv = ["evaluate", "self-match", "--checkpoint", str(tiny_weights), f"data.texts={texts}",
            f"data.tokenizer={world['tokenizer']}", "device=cpu", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "self-match over 3 texts" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["task"] == "self_match" and result["metrics"]["texts"] == 3.0
    assert 0.0 <= result["metrics"]["R1"] <= 100.0
    # its own required keys and value rules, reported in one line
    assert main(["evaluate", "self_match", "--checkpoint", str(tiny_weights)]) == 1
    assert "self_match: data.texts, data.tokenizer not set" in capsys.readouterr().err
    assert main(["evaluate", "self_match", "--checkpoint", str(tiny_weights), "data.num_frames=0"]) == 1
    assert "config key 'data.num_frames' must be >= 1, got 0" in capsys.readouterr().err


def test_help_lists_the_registered_tasks(self_match):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    evaluate, finetune = sub.choices["evaluate"].format_help(), sub.choices["finetune"].format_help()
    for name, spec in list_tasks().items():
        assert name in evaluate and spec.description in evaluate
        assert (name in finetune) == spec.can_finetune
    assert "self_match" in evaluate and "self_match" not in finetune


def test_builtin_tasks_are_registered():
    tasks = list_tasks()
    assert {"egomcq", "epic_mir", "charades"} <= set(tasks)
    assert set(list_tasks(finetune=True)) >= {"epic_mir", "charades"} and not tasks["egomcq"].can_finetune


TASK_MODULES = (
    "egomcq", "epic_mir", "charades", "pretrain", "text_mlm", "egotaskqa", "qfvs", "nlq", "mq", "oa_pretrain",
    "pretrain_allinone", "video_mc", "epic_mir_vtm", "charades_vtm",
)  # fmt: skip


@pytest.mark.parametrize("module", TASK_MODULES)
def test_a_task_module_imports_no_sibling_task(module):
    """Tasks share helpers through tasks.shared / mcq / registry / objectives / pretrain_families only, never through
    another task."""
    import subprocess
    import sys

    siblings = set(TASK_MODULES) - {module}
    probe = (
        f"import sys; import egovlp.tasks.{module}; "
        f"print(sorted(m for m in sys.modules if m.rpartition('.')[2] in {sorted(siblings)!r} "
        "and m.startswith('egovlp.tasks.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"egovlp.tasks.{module} loads {done.stdout.strip()}"


def test_an_unwritable_output_folder_is_refused_before_the_evaluation(self_match, tiny_weights, tmp_path, capsys,
                                                                        monkeypatch):  # fmt: skip
    import egovlp.utils.files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(egovlp.utils.files.tempfile, "mkstemp", refuse)  # root ignores chmod: refuse the probe
    monkeypatch.setattr(SelfMatchEvaluator, "__call__", lambda self, model: pytest.fail("evaluated anyway"))
    argv = ["evaluate", "self_match", "--checkpoint", str(tiny_weights), "data.texts=t.txt", "data.tokenizer=tok",
            "--output", str(tmp_path / "out" / "r.json")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"--output folder {tmp_path / 'out'} is not writable: Permission denied" in err and err.count("\n") == 1

"""One run per output folder: refusal of another run, overwrite, the lock, config changes on resume, disk full."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from egovlp.errors import CheckpointError, ConfigError
from egovlp.models import create_model
from egovlp.train import checkpoint as checkpoint_module
from egovlp.train.checkpoint import latest_checkpoint, save_checkpoint

from .toy_task import ToyTask, fit


def _train_steps(out) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["kind"] == "train"]


def test_a_new_run_refuses_a_folder_holding_another_run(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=4, save_every=2)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match=r"holds another run \(checkpoints/, metrics.jsonl, config.yaml\)"):
        fit(out, max_steps=2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # untouched
    assert not (out / ".lock").exists()


def test_overwrite_clears_the_other_run(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=6, save_every=2)
    result = fit(out, max_steps=2, overwrite=True)
    assert result.step == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000002"]
    assert latest_checkpoint(out / "checkpoints").name == "step_00000002"
    assert _train_steps(out) == [1, 2]


def test_pruning_never_deletes_the_current_runs_checkpoints(tmp_path):
    model = create_model("egovlpv2-tiny")
    for step in (5, 6):  # another timeline's later checkpoints
        save_checkpoint(tmp_path, step, model, {"rng": []}, keep_last=2)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {"rng": []}, keep_last=2)
        assert latest_checkpoint(tmp_path).name == f"step_{step:08d}"  # `latest` names a checkpoint that exists
    names = sorted(p.name for p in tmp_path.glob("step_*"))
    assert names == ["step_00000002", "step_00000003", "step_00000005", "step_00000006"]


def test_the_lock_is_held_while_running_and_a_second_run_is_refused(tmp_path):
    out = tmp_path / "run"
    seen = {}

    class LockWatch(ToyTask):
        def evaluate(self, model, dist):
            seen["lock"] = (out / ".lock").read_text()
            with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()} on host"):
                fit(out, max_steps=1)  # a second run into the folder while this one runs
            return {}

    fit(out, task=LockWatch(), max_steps=2)
    assert f"pid={os.getpid()} host={socket.gethostname()}" in seen["lock"]
    assert not (out / ".lock").exists()  # released at the end


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"pid={dead.pid} host={socket.gethostname()} since=2026-01-01T00:00:00\n")
    with caplog.at_level(logging.WARNING, logger="egovlp"):
        assert fit(out, max_steps=1).step == 1
    assert f"stale lock {out / '.lock'} of process {dead.pid}" in caplog.text
    assert not (out / ".lock").exists()


def test_a_lock_held_on_another_host_is_respected(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid=1 host=some-other-node since=2026-01-01T00:00:00\n")
    with pytest.raises(ConfigError, match="pid 1 on host some-other-node"):
        fit(out, max_steps=1)


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=4, save_every=2)
    saved = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"changed config: optim.lr: 0.01 -> 0.5"):
        fit(out, lr=0.5, max_steps=4, save_every=2, resume="auto")
    with pytest.raises(ConfigError, match="train.accum_steps: 1 -> 2"):
        fit(out, max_steps=4, save_every=2, accum_steps=2, resume="auto")
    assert (out / "config.yaml").read_text() == saved  # still what ran


def test_resume_applies_safe_changes_and_keeps_the_config_history(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=4, save_every=2)
    result = fit(out, max_steps=6, save_every=3, log_every=2, resume="auto")
    assert [h["step"] for h in result.history] == [5, 6]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 6  # what ran
    history = yaml.safe_load((out / "config_history" / "step_00000004.yaml").read_text())
    assert history["train"]["max_steps"] == 4 and history["train"]["resume"] == ""


def test_resume_of_a_missing_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from at .*nowhere"):
        fit(tmp_path / "run", max_steps=1, resume=str(tmp_path / "nowhere"))


def test_disk_full_during_a_save_names_the_path_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    model = create_model("egovlpv2-tiny")
    save_checkpoint(tmp_path, 1, model, {"rng": []})

    def full_disk(model, path):
        path.write_bytes(b"\0" * 100)  # part of the file made it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_weights", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 2, model, {"rng": []})
    message = str(info.value)
    assert str(tmp_path / "step_00000002") in message and "No space left on device (errno ENOSPC)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001"]  # no .step_*.tmp-*
    assert latest_checkpoint(tmp_path).name == "step_00000001"


def test_torch_writer_failure_is_named_too(tmp_path, monkeypatch):
    def torn(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 64")

    monkeypatch.setattr(checkpoint_module.torch, "save", torn)
    with pytest.raises(CheckpointError, match="most likely no space left on the device"):
        save_checkpoint(tmp_path, 3, create_model("egovlpv2-tiny"), {"rng": []})
    assert not list(tmp_path.glob(".step_*"))


def test_stale_temporaries_are_removed_at_start(tmp_path, caplog):
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    (ckpt / ".step_00000002.tmp-999").mkdir(parents=True)
    (ckpt / ".step_00000002.tmp-999" / "model.safetensors").write_bytes(b"\0" * 10)
    (ckpt / ".latest.tmp-999").write_text("step_00000002\n")
    with caplog.at_level(logging.WARNING, logger="egovlp"):
        fit(out, max_steps=1, resume="auto")
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000001"]
    assert "left by an interrupted checkpoint save" in caplog.text


def test_an_output_folder_that_cannot_be_created_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"cannot create train.output_dir {blocker / 'run'}"):
        fit(blocker / "run", max_steps=1)


def test_metrics_keep_one_row_per_step_across_a_resume(tmp_path, monkeypatch):
    from egovlp.train.loop import _Loop

    out = tmp_path / "run"
    step_fn = _Loop._optimizer_step

    class Killed(Exception):
        pass

    def killed(self, losses, bar):
        step_fn(self, losses, bar)
        if self.state.step == 3:
            raise Killed

    monkeypatch.setattr(_Loop, "_optimizer_step", killed)
    with pytest.raises(Killed):
        fit(out, max_steps=6, save_every=2)
    assert _train_steps(out) == [1, 2, 3]
    monkeypatch.setattr(_Loop, "_optimizer_step", step_fn)
    full = fit(tmp_path / "full", max_steps=6, save_every=2)
    resumed = fit(out, max_steps=6, save_every=2, resume="auto")
    assert _train_steps(out) == [1, 2, 3, 4, 5, 6]  # step 3 of the killed run is gone, not doubled
    assert [h["step"] for h in resumed.history] == [3, 4, 5, 6]
    for a, b in zip(full.history[2:], resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-7)
    full_rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in rows] == pytest.approx([json.loads(r)["loss"] for r in full_rows])


def test_files_written_by_a_run_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        fit(out, max_steps=1)
    finally:
        os.umask(old)
    for path in (out / "config.yaml", out / "checkpoints" / "step_00000001" / "model.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert torch.load(out / "checkpoints" / "step_00000001" / "train_state.pt", weights_only=True)["step"] == 1


def test_an_output_folder_without_write_permission_is_a_config_error(tmp_path, monkeypatch):
    from egovlp.train import rundir

    def denied(path, flags, mode=0o777):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rundir.os, "open", denied)  # root ignores chmod, so the refusal is simulated
    with pytest.raises(ConfigError, match=f"train.output_dir {tmp_path / 'run'} is not writable: Permission denied"):
        fit(tmp_path / "run", max_steps=1)


def test_tensorboard_draws_each_step_once_after_a_resume(tmp_path, monkeypatch):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from egovlp.train.loop import _Loop

    out, step_fn = tmp_path / "run", _Loop._optimizer_step

    def killed(self, losses, bar):
        step_fn(self, losses, bar)
        if self.state.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(_Loop, "_optimizer_step", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(out, max_steps=5, save_every=2, tensorboard=True)
    monkeypatch.setattr(_Loop, "_optimizer_step", step_fn)
    fit(out, max_steps=5, save_every=2, tensorboard=True, resume="auto")
    events = accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]  # the killed run's step 3 is purged


def test_the_cli_reports_a_refused_folder_in_one_line(small_world, tmp_path, capsys):
    from egovlp.cli.main import main
    from helpers import tiny_pretrain_overrides

    demo = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "pretrain" / "demo.yaml"
    out = tmp_path / "run"
    overrides = tiny_pretrain_overrides(small_world, out, **{"train.max_steps": 1, "train.plot": "false"})
    assert main(["pretrain", "--config", str(demo), *overrides]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config", str(demo), *overrides, "optim.lr=0.1", "train.resume=auto"]) == 1
    err = capsys.readouterr().err
    assert "changed config: optim.lr: 0.001 -> 0.1" in err and "Traceback" not in err
    assert main(["pretrain", "--config", str(demo), *overrides]) == 1
    assert "holds another run" in capsys.readouterr().err

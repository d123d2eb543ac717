"""Two-process (gloo, CPU) checks of pre-training under DistributedDataParallel and of `egovlp pretrain` under torchrun.

The gradient checks run in one launch of 2 fresh processes (pretrain_dist_worker.py; file-store rendezvous in a tmp
dir, so no TCP port to pick); each test reads its scenario's outcome on both ranks. The CLI check launches torchrun
with a c10d rendezvous on a free port (``--standalone``). Hung collectives are killed after a timeout, and the
ranks' output goes into the failure message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_pretrain_overrides

WORKER = Path(__file__).with_name("pretrain_dist_worker.py")
DEMO = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "pretrain" / "demo.yaml"
WORLD_SIZE = 2
TIMEOUT_S = 150
SCENARIOS = ("egonce_full", "egonce_local", "all_losses")


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback whatever the host name resolves to
    return env


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> bool:
    """Wait for every process; kill the rest after ``timeout_s`` in all. True if it timed out."""
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return timed_out


def _tail(path: Path, title: str, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no output)"
    return f"--- {title} ---\n{text[-chars:]}\n"


@pytest.fixture(scope="module")
def grad_run(tmp_path_factory, small_world) -> dict:
    tmp = tmp_path_factory.mktemp("pretrain_dist")
    init_method = (tmp / "store").as_uri()
    procs = []
    for rank in range(WORLD_SIZE):
        cmd = [sys.executable, str(WORKER), ",".join(SCENARIOS), str(rank), str(WORLD_SIZE), init_method]
        cmd += [str(small_world.files["tokenizer"]), str(tmp / f"rank{rank}.json")]
        with open(tmp / f"rank{rank}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env()))
    timed_out = _wait_all(procs, TIMEOUT_S)
    results, output = [], ""
    for rank, proc in enumerate(procs):
        path = tmp / f"rank{rank}.json"
        results.append(json.loads(path.read_text()) if path.exists() else {})
        output += _tail(tmp / f"rank{rank}.log", f"rank {rank} (exit {proc.returncode})")
    return {"results": results, "output": output, "timed_out": timed_out}


def _check(run: dict, scenario: str) -> None:
    statuses = [r.get(scenario, "not run (an earlier scenario failed or the process died)") for r in run["results"]]
    if all(s == "ok" for s in statuses):
        return
    why = f"timed out after {TIMEOUT_S}s; " if run["timed_out"] else ""
    details = "\n".join(f"--- rank {rank}: {status}" for rank, status in enumerate(statuses))
    pytest.fail(f"scenario {scenario!r} failed: {why}\n{details}\n{run['output']}")


@pytest.mark.slow
def test_ddp_egonce_gradient_equals_full_batch_step(grad_run):
    """gather_grad=full: 2 ranks x half the batch give the single-process full-batch gradient (to ~1e-5)."""
    _check(grad_run, "egonce_full")


@pytest.mark.slow
def test_ddp_egonce_gradient_local_is_full_batch_over_world_size(grad_run):
    """gather_grad=local (the release's choice): the full-batch gradient divided by the world size."""
    _check(grad_run, "egonce_local")


@pytest.mark.slow
def test_ddp_all_losses_give_every_parameter_a_finite_gradient(grad_run):
    """EgoNCE + MLM + VTM (shared and three-pass): finite losses, no unused parameter, same gradient on both ranks."""
    _check(grad_run, "all_losses")


@pytest.mark.slow
def test_pretrain_cli_under_torchrun(small_world, tmp_path):
    """torchrun, 2 processes: training runs, EgoMCQ counts every question once, a checkpoint is written."""
    out = tmp_path / "run"
    overrides = tiny_pretrain_overrides(small_world, out, **{"train.max_steps": 2, "train.eval_every": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD_SIZE}"]
    cmd += ["-m", "egovlp.cli.main", "pretrain", "--config", str(DEMO), *overrides]
    log_path = tmp_path / "torchrun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    timed_out = _wait_all([proc], TIMEOUT_S)
    output = _tail(log_path, f"torchrun (exit {proc.returncode})")
    assert not timed_out, f"timed out after {TIMEOUT_S}s\n{output}"
    assert proc.returncode == 0, output
    assert "finished at step 2" in output, output

    questions = len(json.loads(Path(small_world.files["egomcq"]).read_text()))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["step"] == 2, records
    assert evals[0]["egomcq/questions"] == questions == 13  # the sampler's padding is not counted
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert (out / "checkpoints" / "step_00000002").is_dir()
    assert (out / "model.safetensors").is_file()

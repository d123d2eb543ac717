"""Two-process gloo checks of the distributed loss paths (the scenarios live in dist_worker.py).

One launch per module (importing torch twice costs more than the checks): 2 fresh Python processes rendezvous
through a file store in a tmp dir (no TCP port to pick, so no clashes between parallel test runs), run every
scenario with DistributedDataParallel on CPU and compare with a single-process full-batch reference. Each test then
reads its scenario's outcome on both ranks. A hung collective is killed after a timeout; the ranks' output goes into
the failure message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 120
SCENARIOS = ("egonce", "mlm", "vtm")


def _launch(tmp: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback whatever the host name resolves to
    init_method = (tmp / "store").as_uri()
    logs, procs = [], []
    timed_out = False
    try:
        for rank in range(WORLD_SIZE):
            log = open(tmp / f"rank{rank}.log", "w+")  # noqa: SIM115 - closed in finally
            logs.append(log)
            cmd = [sys.executable, str(WORKER), ",".join(SCENARIOS), str(rank), str(WORLD_SIZE), init_method]
            cmd.append(str(tmp / f"rank{rank}.json"))
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + TIMEOUT_S
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
        output = []
        for rank, log in enumerate(logs):
            log.seek(0)
            output.append(f"--- rank {rank} (exit {procs[rank].returncode if rank < len(procs) else None}) ---\n")
            output.append(log.read()[-6000:])
            log.close()
    results = []
    for rank in range(WORLD_SIZE):
        path = tmp / f"rank{rank}.json"
        results.append(json.loads(path.read_text()) if path.exists() else {})
    return {"results": results, "output": "".join(output), "timed_out": timed_out}


@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("losses_dist"))


def _check(run: dict, scenario: str) -> None:
    statuses = [r.get(scenario, "not run (an earlier scenario failed or the process died)") for r in run["results"]]
    if all(s == "ok" for s in statuses):
        return
    why = f"timed out after {TIMEOUT_S}s; " if run["timed_out"] else ""
    details = "\n".join(f"--- rank {rank}: {status}" for rank, status in enumerate(statuses))
    pytest.fail(f"scenario {scenario!r} failed: {why}\n{details}\n{run['output']}")


@pytest.mark.slow
def test_egonce_gather_gradients_match_full_batch(dist_run):
    """all_gather forward = concatenation; FULL gives the full-batch gradient, LOCAL that gradient / world size."""
    _check(dist_run, "egonce")


@pytest.mark.slow
def test_mlm_global_count_gradient_matches_full_batch(dist_run):
    """Ranks with different numbers of labelled tokens (and one with none) still give the full-batch gradient."""
    _check(dist_run, "mlm")


@pytest.mark.slow
def test_vtm_sampling_uses_global_indices_and_never_a_positive(dist_run):
    _check(dist_run, "vtm")

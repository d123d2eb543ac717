"""Two gloo processes running OAModule on half batches give the single-process full-batch loss terms and gradients
(both variants; the gathered streams, object flags and EgoNCE tags). The rank logic is in oa_dist_worker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("oa_dist_worker.py")


@pytest.mark.slow
def test_oa_module_under_two_processes_equals_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    init = (tmp_path / "store").as_uri()
    procs = []
    for rank in range(2):
        cmd = [sys.executable, str(WORKER), "four_stream,global_local", str(rank), "2", init,
               str(tmp_path / f"rank{rank}.json")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=180)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank in range(2):
        path = tmp_path / f"rank{rank}.json"
        status = json.loads(path.read_text())["status"] if path.exists() else "no result"
        assert status == "ok", f"rank {rank}: {status}\n" + "\n".join(outputs)

"""Two processes (gloo, CPU) through the loop: skipped samples summed over ranks, rank 1's warnings in train.log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("loop_dist_worker.py")


@pytest.mark.slow
def test_skips_are_summed_over_ranks_and_every_rank_warns_into_train_log(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out, init = tmp_path / "run", (tmp_path / "store").as_uri()
    procs = []
    for rank in range(2):
        cmd = [sys.executable, str(WORKER), str(rank), "2", init, str(out), str(tmp_path / f"rank{rank}.json")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the 2-process loop run timed out")
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["skipped"] for r in results] == [8, 8]  # every even item once, whichever rank drew it
    log = (out / "train.log").read_text()
    rank1 = [line for line in log.splitlines() if line.startswith("[rank1]")]
    assert rank1 and all("WARNING" in line for line in rank1)  # rank 1 writes its warnings, and only those
    assert "unreadable toy item" in "\n".join(rank1)
    assert "8 samples were skipped (unreadable) over 2 rank(s)" in log
    saved = torch.load(out / "checkpoints" / "step_00000004" / "train_state.pt", weights_only=True)
    assert saved["skipped"] == 8
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped") for r in rows if r["kind"] == "train"][-1] == 8

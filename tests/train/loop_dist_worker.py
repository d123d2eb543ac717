"""One rank of the 2-process loop check; launched by test_loop_distributed.py (not a test module itself).

Usage: python loop_dist_worker.py RANK WORLD_SIZE INIT_METHOD OUTPUT_DIR RESULT_FILE

Both ranks train the toy task (tests/train/toy_task.py) under DDP (gloo, CPU) with the even items unreadable, with
the CLI's logging set-up (rank passed in, ``train.log`` in the output folder), and write what they saw as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from toy_task import QUIET, ToyConfig, ToyTask

from egovlp.config import to_yaml
from egovlp.models import create_model
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig, Trainer
from egovlp.train.optim import OptimConfig
from egovlp.utils.logging import add_log_file, setup_logging

BAD = tuple(range(0, 16, 2))  # each replaced by the odd item before it: 8 skips per epoch over both ranks


def main() -> None:
    rank, world, init_method, out, result_file = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
        sys.argv[5],
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    setup_logging(logging.INFO, rank=rank)
    add_log_file(Path(out) / "train.log", rank=rank)
    train = dataclasses.replace(TrainConfig(), output_dir=out, max_steps=4, **QUIET)  # 4 steps = one epoch
    cfg = ToyConfig(train, OptimConfig(lr=1e-2))
    torch.manual_seed(0)
    task = ToyTask(n=16, bad=BAD)
    result = Trainer(cfg.train, cfg.optim, DistInfo(rank, world, rank, torch.device("cpu")), to_yaml(cfg)).fit(
        task, create_model("egovlpv2-tiny")
    )
    dist.destroy_process_group()
    Path(result_file).write_text(json.dumps({"skipped": result.skipped_samples, "step": result.step}))


if __name__ == "__main__":
    main()

"""The typed loop: config value rules, device checks, thread choice, skip counts over ranks, logs and the loss curve."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from egovlp.config import load_config
from egovlp.errors import ConfigError
from egovlp.train import loop as loop_module
from egovlp.train.distributed import resolve_device
from egovlp.train.loop import LoopState, TrainConfig, Trainer, choose_num_threads
from egovlp.train.optim import OptimConfig
from egovlp.train.plots import plot_losses
from egovlp.utils.logging import add_log_file, setup_logging

from .toy_task import CPU, ToyConfig, ToyTask, fit


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=fp64", "'train.precision' must be one of auto, fp32, fp16, bf16, got 'fp64'"),
        ("train.accum_steps=0", "'train.accum_steps' must be >= 1, got 0"),
        ("train.log_every=0", "'train.log_every' must be >= 1, got 0"),
        ("train.max_steps=-5", "'train.max_steps' must be >= 0, got -5"),
        ("train.epochs=0", "'train.epochs' must be >= 1"),
        ("train.eval_every=-1", "'train.eval_every' must be >= 0"),
        ("train.save_every=-1", "'train.save_every' must be >= 0"),
        ("train.keep_last=-1", "'train.keep_last' must be >= 0"),
        ("train.num_threads=-2", "'train.num_threads' must be >= 0"),
        ("train.device=gpu", "'train.device' must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("optim.lr=-1", "'optim.lr' must be > 0, got -1"),
        ("optim.lr=0", "'optim.lr' must be > 0, got 0"),
        ("optim.warmup_fraction=1.5", "'optim.warmup_fraction' must be in [0, 1], got 1.5"),
        ("optim.weight_decay=-0.1", "'optim.weight_decay' must be >= 0"),
        ("optim.grad_clip=-1", "'optim.grad_clip' must be >= 0"),
        ("optim.betas=[0.9,1.0]", "'optim.betas' must be two numbers in [0, 1)"),
        ("optim.freeze=[audio]", "'optim.freeze' must name towers among text, video"),
    ],
)
def test_bad_train_and_optim_values_are_refused_at_load(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(ToyConfig, None, [override])
    assert message in str(info.value)


def test_overwrite_and_resume_together_are_refused():
    with pytest.raises(ConfigError, match="'train.overwrite' clears the run that train.resume='auto' would continue"):
        load_config(ToyConfig, None, ["train.overwrite=true", "train.resume=auto"])


def test_good_values_load():
    cfg = load_config(ToyConfig, None, ["train.precision=bf16", "train.device=cuda:1", "optim.warmup_fraction=1"])
    assert cfg.train.device == "cuda:1" and cfg.optim.warmup_fraction == 1.0


def test_fp16_on_the_cpu_is_a_config_error():
    with pytest.raises(ConfigError, match="'train.precision' is fp16, which needs CUDA"):
        Trainer(TrainConfig(precision="fp16"), OptimConfig(), CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_device_on_a_machine_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="'train.device' is 'cuda' but CUDA is not available"):
        resolve_device("cuda")


def test_auto_threads_are_one_for_a_tiny_model_on_the_cpu():
    tiny, big = torch.nn.Linear(10, 10), torch.nn.Linear(2500, 2500)  # 110 and 6.25 M parameters
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_num_threads(0, tiny, cpu) == 1
    assert choose_num_threads(0, big, cpu) is None  # torch's default
    assert choose_num_threads(0, tiny, cuda) is None
    assert choose_num_threads(3, tiny, cpu) == 3


def test_a_tiny_run_uses_one_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(loop_module.torch, "set_num_threads", lambda n: calls.append(n))
    calls: list[int] = []
    fit(tmp_path / "run", max_steps=1)
    assert calls == [1]


def test_skip_counts_are_summed_over_ranks(tmp_path, monkeypatch, caplog):
    """A fake all-reduce adds another rank that skipped 5 samples; logs, metrics, result and checkpoint see 1 + 5."""

    def all_reduce_with_another_rank(t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        out[-1] += 5  # the last entry is the skip count (the other rank's losses are 0 in this fake)
        return out

    monkeypatch.setattr(loop_module, "all_reduce_sum", all_reduce_with_another_rank)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="egovlp"):
        result = fit(out, task=ToyTask(n=16, bad=(3,)), max_steps=8)  # one epoch: item 3 is replaced once
    assert result.skipped_samples == 6
    assert "6 samples were skipped (unreadable) over 1 rank(s)" in caplog.text
    saved = torch.load(out / "checkpoints" / "step_00000008" / "train_state.pt", weights_only=True)
    assert saved["skipped"] == 6
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-2]["kind"] == "train" and rows[-1]["kind"] == "train" and rows[-1]["skipped"] == 6


def test_the_loop_state_is_a_dataclass_saved_as_before(tmp_path):
    fit(tmp_path / "run", max_steps=3)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step_00000003" / "train_state.pt", weights_only=True)
    assert {k: saved[k] for k in ("step", "epoch", "micro_in_epoch", "skipped")} == {
        "step": 3, "epoch": 0, "micro_in_epoch": 3, "skipped": 0,
    }  # fmt: skip
    assert LoopState(**{k: saved[k] for k in ("step", "epoch", "micro_in_epoch", "skipped")}).step == 3


@pytest.fixture
def egovlp_logger():
    logger = logging.getLogger("egovlp")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    for h in saved[0]:
        logger.addHandler(h)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_other_ranks_write_warnings_to_the_log_file(tmp_path, egovlp_logger, monkeypatch):
    monkeypatch.setenv("RANK", "0")  # the rank is passed in, never read from the environment
    log_file = tmp_path / "train.log"
    setup_logging(logging.INFO, rank=1)
    add_log_file(log_file, rank=1)
    log = logging.getLogger("egovlp.test")
    log.info("an info line")
    log.warning("sample skipped on rank 1")
    text = log_file.read_text()
    assert "[rank1]" in text and "sample skipped on rank 1" in text and "an info line" not in text


def test_an_unwritable_log_file_is_a_config_error(tmp_path, egovlp_logger):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write the log file"):
        add_log_file(tmp_path / "file" / "train.log")


def test_every_run_draws_its_loss_curve(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=3, plot=True)
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matplotlib_means_no_curve_and_a_log_line(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    fit(out, max_steps=2)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    with caplog.at_level(logging.WARNING, logger="egovlp"):
        assert plot_losses(out / "metrics.jsonl", out / "loss_curve.png") is None
    assert "matplotlib is not installed" in caplog.text and not (out / "loss_curve.png").exists()

"""All-in-one pre-training: VTM pairs, losses that fall, the shared loop through `egovlp pretrain`, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from egovlp.cli.common import load_experiment_config
from egovlp.cli.main import main
from egovlp.cli.pretrain import pretrain
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import ConfigError
from egovlp.models.allinone_model import AllInOne
from egovlp.models.registry import create_model
from egovlp.models.weights import load_model
from egovlp.tasks.pretrain_allinone import (
    AioLossConfig,
    AllInOnePretrainConfig,
    AllInOnePretrainModule,
    AllInOnePretrainTask,
    vtm_pairs,
)
from helpers import add_mlm, as_overrides, kill_and_resume, tiny_pretrain_overrides

PRESET = "allinone_demo"


def overrides(world, out_dir, **extra) -> list[str]:
    """The demo overrides of the EgoVLPv2 tests for the All-in-one preset (no init.roberta: one ViT, no text tower)."""
    extra = {"model.text.vocab_size": 300, "train.plot": False, **extra}
    return [o for o in tiny_pretrain_overrides(world, out_dir, **extra) if not o.startswith("init.roberta=")]


@pytest.fixture
def tokenizer(small_world):
    return Tokenizer.from_dir(small_world.files["tokenizer"])


def test_vtm_pairs_swap_a_random_half_for_other_clips_of_the_batch():
    index, labels = vtm_pairs(9, torch.Generator().manual_seed(0))
    assert int(labels.sum()) == 4
    rows = torch.arange(9)
    assert torch.equal(index[labels == 1], rows[labels == 1])
    assert bool((index[labels == 0] != rows[labels == 0]).all())
    again = vtm_pairs(9, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], index) and torch.equal(again[1], labels)
    with pytest.raises(ValueError, match="at least 2 clips"):
        vtm_pairs(1, torch.Generator())


def tiny_batch(vocab: int, b: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (b, 10), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = 1, 0
    return {"video": torch.randn(b, 3, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def test_training_steps_lower_every_loss_on_a_fixed_batch(tokenizer):
    torch.manual_seed(0)
    model = create_model("allinone-test-vtc")
    assert isinstance(model, AllInOne)
    module = AllInOnePretrainModule(model, AioLossConfig(vtc_weight=1.0), seed=1)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    batch = add_mlm(tiny_batch(tokenizer.vocab_size), tokenizer)
    history = []
    for _ in range(10):
        module.generator.manual_seed(1)  # the same pairs and patch orders every step
        module.patch_generator.manual_seed(2)
        out = module(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    assert set(history[0]) == {"loss", "mlm", "vtm", "vtc"}
    for key in ("loss", "mlm", "vtm", "vtc"):
        assert history[-1][key] < history[0][key], (key, [h[key] for h in history])
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]


def test_loss_weights_and_their_heads_are_checked(small_world, tmp_path):
    with pytest.raises(ConfigError, match="loss.vtc_weight.*model.embed_dim"):
        load_experiment_config(
            AllInOnePretrainConfig, PRESET, overrides(small_world, tmp_path, **{"loss.vtc_weight": 1})
        )
    with pytest.raises(ConfigError, match="every All-in-one loss weight is 0"):
        model = create_model("allinone-test")
        assert isinstance(model, AllInOne)
        AllInOnePretrainModule(model, AioLossConfig(mlm_weight=0, vtm_weight=0))
    cfg = load_experiment_config(AllInOnePretrainConfig, PRESET, overrides(small_world, tmp_path))
    task = AllInOnePretrainTask(cfg, Tokenizer.from_dir(small_world.files["tokenizer"]), _dist())
    with pytest.raises(ConfigError, match="needs an allinone-family model"):
        task.build_module(create_model("egovlpv2-tiny"))


def _dist():
    from egovlp.train.distributed import DistInfo

    return DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_pretrain_cli_dispatches_on_the_model_family(small_world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "pretrain",
        "--config",
        PRESET,
        *overrides(small_world, out, **{"train.max_steps": 3, "train.eval_every": 3}),
    ]
    assert main(argv) == 0
    assert "finished at step 3" in capsys.readouterr().out
    model = load_model(out / "model.safetensors")
    assert isinstance(model, AllInOne) and model.cfg.video.num_frames == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and {"mlm", "vtm"} <= set(train[0])
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["egomcq/questions"] == 13 and "egomcq/fusion/overall" in evals[-1]


def test_kill_and_resume_gives_the_uninterrupted_losses(small_world, tmp_path, monkeypatch):
    def run(name, **kw):
        cfg = load_experiment_config(AllInOnePretrainConfig, PRESET, overrides(small_world, tmp_path / name, **kw))
        return pretrain(cfg, AllInOnePretrainTask)

    steps = {"train.max_steps": 5, "train.save_every": 2}
    full, resumed = kill_and_resume(run, monkeypatch, 3, steps)
    assert [h["step"] for h in resumed.history] == [3, 4, 5]
    for h_full, h_res in zip(full.history[2:], resumed.history):
        for key in ("loss", "mlm", "vtm"):
            assert h_res[key] == pytest.approx(h_full[key], rel=1e-6, abs=1e-6), (h_res["step"], key)


def test_an_egovlpv2_config_still_gets_egovlpv2_pretraining():
    from egovlp.cli.pretrain import _model_family
    from egovlp.tasks.pretrain import PretrainConfig
    from egovlp.tasks.pretrain_families import pretraining_for

    assert _model_family("demo", []) == "egovlpv2"
    assert _model_family(PRESET, []) == "allinone"
    assert _model_family("demo", ["model.arch=allinone-test"]) == "allinone"
    assert pretraining_for("egovlpv2")[0] is PretrainConfig and pretraining_for("frozen")[0] is PretrainConfig
    cfg = load_experiment_config(AllInOnePretrainConfig, PRESET, [])
    assert dataclasses.asdict(cfg.model)["family"] == "allinone"


@pytest.mark.slow
def test_a_short_synthetic_pretraining_is_well_above_chance_on_egomcq(tmp_path):
    """The allinone_demo preset (MLM + VTM, 400 steps of 16 clips, about a minute on a CPU) on a world of 8 videos:
    the VTM score picks the right clip of 5 (chance 20 %) far more often than chance over 120 questions."""
    from egovlp.data.synthetic import SynthConfig, generate

    synth = SynthConfig(seed=0, num_videos=8, video_seconds=120.0, num_mcq_inter=60, num_mcq_intra=60, workers=1,
                      epic=False, charades=False)  # fmt: skip
    world = generate(tmp_path / "world", synth)
    values = {
        "data.video_root": world.files["videos"], "data.metadata": world.files["egoclip"],
        "data.tokenizer": world.files["tokenizer"], "egomcq.metadata": world.files["egomcq"],
        "egomcq.video_root": world.files["videos"], "data.num_workers": 0, "egomcq.num_workers": 0,
        "train.output_dir": tmp_path / "run", "train.eval_every": 0, "train.save_every": 0, "train.progress": False,
        "train.tensorboard": False, "train.plot": False,
    }  # fmt: skip
    cfg = load_experiment_config(AllInOnePretrainConfig, PRESET, as_overrides(values))
    result = pretrain(cfg, AllInOnePretrainTask)
    final = result.evaluations[-1]
    assert final["egomcq/questions"] == 120
    assert final["egomcq/fusion/overall"] > 30.0 and final["egomcq/fusion/inter"] > 35.0, final
    assert result.history[-1]["vtm"] < 0.65 < result.history[0]["vtm"]  # VTM left ln 2 = 0.693


@pytest.mark.slow
def test_allinone_pretrain_with_vtc_under_torchrun(small_world, tmp_path):
    """torchrun, 2 processes (gloo): MLM + VTM + VTC over the gathered batch under DDP, EgoMCQ once per question."""
    import subprocess
    import sys

    from .test_pretrain_distributed import TIMEOUT_S, WORLD_SIZE, _env, _tail, _wait_all

    out = tmp_path / "run"
    extra = {"train.max_steps": 2, "train.eval_every": 2, "model.arch": "allinone-test-vtc", "loss.vtc_weight": 1.0}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD_SIZE}"]
    cmd += ["-m", "egovlp.cli.main", "pretrain", "--config", PRESET, *overrides(small_world, out, **extra)]
    log_path = tmp_path / "torchrun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    timed_out = _wait_all([proc], TIMEOUT_S)
    output = _tail(log_path, f"torchrun (exit {proc.returncode})")
    assert not timed_out and proc.returncode == 0 and "finished at step 2" in output, output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and {"mlm", "vtm", "vtc"} <= set(train[0])
    assert [r["egomcq/questions"] for r in records if r["kind"] == "eval"] == [13]
    assert isinstance(load_model(out / "model.safetensors"), AllInOne)

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from egovlp.cli.common import load_experiment_config
from egovlp.cli.main import main
from egovlp.cli.pretrain import pretrain
from egovlp.data.tokenizer import Tokenizer
from egovlp.models import EgoVLPv2
from egovlp.tasks.pretrain import LossConfig, PretrainConfig, PretrainModule
from helpers import add_mlm, kill_and_resume, tiny_pretrain_overrides

DEMO = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "pretrain" / "demo.yaml"


def tiny_batch(vocab: int, b: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, 10), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = 1, 0
    ids[1, 6] = 2
    return {
        "video": torch.randn(b, 4, 3, 32, 32, generator=g),
        "input_ids": ids,
        "attention_mask": mask,
        "verb": torch.nn.functional.one_hot(torch.randint(0, 3, (b,), generator=g), 3).float(),
        "noun": torch.nn.functional.one_hot(torch.randint(0, 3, (b,), generator=g), 3).float(),
    }


@pytest.fixture
def tokenizer(small_world):
    return Tokenizer.from_dir(small_world.files["tokenizer"])


@pytest.fixture
def tiny_cfg():
    cfg = load_experiment_config(PretrainConfig, str(DEMO), [])
    return cfg.model


def test_shared_lower_layers_equal_three_full_passes(tiny_cfg, tokenizer):
    """Same losses and gradients as the release's three full passes (dropout off so both see the same noise)."""
    torch.manual_seed(0)
    model = EgoVLPv2(tiny_cfg)
    with torch.no_grad():  # non-trivial gates so the fusion really runs
        for n, p in model.named_parameters():
            if "alpha" in n:
                p.fill_(0.5)
    batch = add_mlm(tiny_batch(tiny_cfg.text.vocab_size), tokenizer)
    results = []
    for share in (True, False):
        module = PretrainModule(model, LossConfig(share_lower_layers=share), tokenizer, seed=7).eval()
        model.zero_grad()
        out = module(batch)
        out["loss"].backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = results
    for k in ("loss", "egonce", "mlm", "vtm"):
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)
    assert ga.keys() == gb.keys()
    for n in ga:  # float32 round-off scales with the gradient's size
        scale = max(1.0, ga[n].abs().max().item())
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5 * scale, rtol=1e-4, msg=n)


def test_training_steps_reduce_the_loss_on_a_fixed_batch(tiny_cfg, tokenizer):
    torch.manual_seed(0)
    module = PretrainModule(EgoVLPv2(tiny_cfg), LossConfig(), tokenizer, seed=1)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    batch = add_mlm(tiny_batch(tiny_cfg.text.vocab_size), tokenizer)
    losses = []
    for _ in range(12):
        module.generator.manual_seed(1)  # the same masks and negatives every step
        out = module(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.9 * losses[0] and losses[-1] == min(losses), losses


def test_egonce_only_ablation_needs_no_fusion(tiny_cfg, tokenizer):
    module = PretrainModule(EgoVLPv2(tiny_cfg), LossConfig(mlm_weight=0, vtm_weight=0), tokenizer)
    out = module(add_mlm(tiny_batch(tiny_cfg.text.vocab_size), tokenizer))
    assert set(out) == {"loss", "egonce"} and module.has_unused_parameters


def _run(world, out_dir, **extra):
    cfg = load_experiment_config(PretrainConfig, str(DEMO), tiny_pretrain_overrides(world, out_dir, **extra))
    return pretrain(cfg)


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_and_resume_gives_the_uninterrupted_losses(small_world, tmp_path, monkeypatch, workers):
    steps = {"train.max_steps": 6, "train.save_every": 3, "data.num_workers": workers}
    full, resumed = kill_and_resume(lambda name, **kw: _run(small_world, tmp_path / name, **kw), monkeypatch, 4, steps)
    assert (tmp_path / "killed" / "checkpoints" / "step_00000003").is_dir()
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    for h_full, h_res in zip(full.history[3:], resumed.history):
        for key in ("loss", "egonce", "mlm", "vtm"):
            assert h_res[key] == pytest.approx(h_full[key], rel=1e-6, abs=1e-6), (h_res["step"], key)


def test_pretrain_cli_smoke(small_world, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = tiny_pretrain_overrides(small_world, out, **{"train.max_steps": 3, "train.eval_every": 3})
    assert main(["pretrain", "--config", str(DEMO), *overrides]) == 0
    assert "finished at step 3" in capsys.readouterr().out
    for name in ("model.safetensors", "model.yaml", "config.yaml", "metrics.jsonl", "train.log"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and evals[-1]["egomcq/questions"] == 13  # 6 inter + 7 intra, each exactly once
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


def test_pretrain_cli_reports_bad_config_key(tmp_path, capsys):
    assert main(["pretrain", "--config", str(DEMO), "train.max_step=3"]) == 1
    assert "unknown config key 'train.max_step'" in capsys.readouterr().err


def test_changed_loss_weights_change_the_total(tiny_cfg, tokenizer):
    batch = add_mlm(tiny_batch(tiny_cfg.text.vocab_size), tokenizer)
    model = EgoVLPv2(tiny_cfg).eval()
    a = PretrainModule(model, LossConfig(), tokenizer, seed=0)(batch)
    b = PretrainModule(model, dataclasses.replace(LossConfig(), vtm_weight=0.5), tokenizer, seed=0)(batch)
    torch.testing.assert_close(a["loss"], a["egonce"] + a["mlm"] + 2 * a["vtm"])
    torch.testing.assert_close(b["loss"], b["egonce"] + b["mlm"] + 0.5 * b["vtm"])


def test_mlm_masking_belongs_to_the_item_not_the_batch(small_world, tokenizer):
    """An item's MLM masking comes from its own seed (drawn in its per-item stream), whatever batch it lands in."""
    from egovlp.data.collate import EgoClipCollate
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.train.datasets import TrainingDataset

    ds = TrainingDataset(
        EgoClipDataset(small_world["egoclip"], small_world["videos"], 2, None, chunk_seconds=small_world.chunk_seconds,
                       num_verbs=small_world.num_verbs, num_nouns=small_world.num_nouns), seed=3
    )  # fmt: skip
    collate = EgoClipCollate(tokenizer, 15, "max_length", mlm_probability=0.5)
    items = [ds[i][0] for i in range(6)]
    alone = collate([items[4]])
    mixed = collate([items[1], items[4], items[0]])
    assert torch.equal(alone["mlm_input_ids"][0], mixed["mlm_input_ids"][1])
    assert torch.equal(alone["mlm_labels"][0], mixed["mlm_labels"][1])
    assert (mixed["mlm_labels"] != -100).any()  # something was masked at p = 0.5
    assert ds[4][0]["mlm_seed"] == items[4]["mlm_seed"]  # the per-item stream makes the seed reproducible
    assert len({it["mlm_seed"] for it in items}) == len(items)


def test_missing_init_paths_fail_at_start_naming_the_key(tmp_path, capsys, monkeypatch):
    """The demo's stage-2 config alone needs stage 1's text tower: the run says so before loading any data."""
    monkeypatch.chdir(tmp_path)  # the preset's relative paths: not a demo/ that `make demo` left in the checkout
    assert main(["pretrain", "--config", "pretrain/demo", f"train.output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "init.roberta=demo/text/roberta: no such file or folder" in err and "pretrain-text" in err
    assert not (tmp_path / "train.log").exists()


def test_periodic_egomcq_evaluation_shows_a_progress_bar(small_world, tokenizer, monkeypatch):
    """Pre-training's validation draws a progress bar when train.progress is on (and none when it is off)."""
    import tqdm.auto

    from egovlp.tasks.pretrain import PretrainTask
    from egovlp.train.distributed import DistInfo

    bars: list[str] = []

    def recording_tqdm(iterable, desc="", **kwargs):
        bars.append(desc)
        return iterable

    monkeypatch.setattr(tqdm.auto, "tqdm", recording_tqdm)
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    for progress in (True, False):
        overrides = tiny_pretrain_overrides(small_world, "unused", **{"train.progress": progress})
        cfg = load_experiment_config(PretrainConfig, str(DEMO), overrides)
        task = PretrainTask(cfg, tokenizer, dist)
        metrics = task.evaluate(EgoVLPv2(cfg.model).eval(), dist)
        assert metrics["egomcq/questions"] == 13.0
    assert bars == ["EgoMCQ"]

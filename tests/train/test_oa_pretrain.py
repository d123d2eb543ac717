"""OA-Trans pre-training end to end: ``egovlp pretrain loss.objective=oa_trans`` on the synthetic world's exact
detections, both variants; the saved weights are a plain frozen-family dual encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from egovlp.cli.main import main
from egovlp.errors import ConfigError
from egovlp.models import get_model_config
from egovlp.models.weights import read_model_config
from egovlp.tasks.objectives import get_objective
from egovlp.tasks.pretrain import PretrainConfig

from .test_pretrain_frozen import DEMO, frozen_overrides, wordpiece  # noqa: F401  (fixture)


def oa_overrides(world, out: Path, tokenizer: Path, variant: str, steps: int = 2) -> list[str]:
    return frozen_overrides(world, out, tokenizer, **{
        "loss.objective": "oa_trans", "oa.detections": world["detections"], "oa.vocab": world["objects_vocab"],
        "oa.variant": variant, "oa.bad_detections": "raise", "oa.top_k": 3, "train.max_steps": steps,
        "train.eval_every": steps, "train.save_every": steps})  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "terms"),
    [
        ("four_stream", {"video_text", "video_tags", "anchor_text"}),
        ("global_local", {"video_text", "caption_tags", "region"}),
    ],
)
def test_oa_pretraining_runs_end_to_end(small_world, wordpiece, tmp_path, capsys, variant, terms):  # noqa: F811
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(DEMO), *oa_overrides(small_world, out, wordpiece, variant)]) == 0
    assert "finished at step 2" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert set(r) >= {"loss", *terms} and all(r[t] > 0 for t in terms)
        assert r["loss"] == pytest.approx(sum(r[t] for t in terms), rel=1e-4)  # default weights 1
    assert [r for r in records if r["kind"] == "eval"][-1]["egomcq/questions"] == 13
    # the object streams leave no trace in the weights: a plain frozen-family dual encoder
    cfg = read_model_config(out / "model.safetensors")
    assert (cfg.family, cfg.num_fusion_layers) == ("frozen", 0)
    assert not any("local_proj" in k for k in load_file(str(out / "model.safetensors")))


def test_oa_objective_needs_detections():
    cfg = PretrainConfig(model=get_model_config("frozen-in-time-tiny"))
    with pytest.raises(ConfigError, match=r"loss.objective=oa_trans needs oa.detections"):
        get_objective("oa_trans").wrap_dataset(None, cfg)

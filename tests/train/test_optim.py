import math

import pytest
import torch

from egovlp.models import create_model
from egovlp.train.optim import OptimConfig, build_optimizer, build_scheduler, cosine_with_warmup, param_groups


def test_param_groups_split_new_and_decay():
    model = create_model("egovlpv2-tiny")
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.01, 4.0, model.is_new_parameter, model.no_weight_decay)}
    assert set(groups) == {"pretrained/decay", "pretrained/no_decay", "new/decay", "new/no_decay"}
    assert groups["new/decay"]["lr"] == pytest.approx(4e-4) and groups["pretrained/decay"]["lr"] == pytest.approx(1e-4)
    assert groups["pretrained/no_decay"]["weight_decay"] == 0 and groups["new/decay"]["weight_decay"] == 0.01
    names = {g: set(groups[g]["param_names"]) for g in groups}
    assert "video_model.pos_embed" in names["pretrained/no_decay"]
    assert "video_model.blocks.0.attn.qkv.bias" in names["pretrained/no_decay"]
    assert "video_model.blocks.0.attn.qkv.weight" in names["pretrained/decay"]
    assert "video_model.blocks.3.attn.alpha_i2t" in names["new/no_decay"]
    assert "txt_proj.0.weight" in names["new/decay"] and "cls_token" in names["new/no_decay"]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_cosine_schedule_with_warmup_values():
    assert cosine_with_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, 10) == pytest.approx(0.5)  # halfway through the cosine
    assert cosine_with_warmup(100, 100, 10) == pytest.approx(0.0)
    assert cosine_with_warmup(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(32, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 90)))


def test_scheduler_steps_per_optimiser_step():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, warmup_fraction=0.5, new_param_lr_mult=1.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5])

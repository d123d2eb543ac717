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


def test_freeze_towers_keeps_fusion_trainable_and_frozen_weights_fixed():
    from egovlp.errors import ConfigError
    from egovlp.train.optim import freeze_towers

    model = create_model("egovlpv2-tiny")
    frozen = set(freeze_towers(model, ["text"], model.is_new_parameter))
    assert "text_model.embeddings.word_embeddings.weight" in frozen
    assert "text_model.encoder.layer.3.attention.self.query.weight" in frozen
    assert not any("crossattention_t2i" in n or "alpha_t2i" in n for n in frozen)  # fusion modules still train
    assert not any(n.startswith(("video_model.", "txt_proj.", "mlm_score.")) for n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable.isdisjoint(frozen) and "text_model.encoder.layer.3.alpha_t2i" in trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(lr=1e-2), model.is_new_parameter, model.no_weight_decay)
    video, ids = torch.randn(2, 4, 3, 32, 32), torch.randint(3, 100, (2, 6))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "alpha" in n:
                p.fill_(0.5)
    fused = model.fuse(video, ids, torch.ones_like(ids))
    (model.encode_text(ids).sum() + fused.text.sum() + fused.video.sum()).backward()
    opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["text_model.encoder.layer.3.crossattention_t2i.self.query.weight"],
                           after["text_model.encoder.layer.3.crossattention_t2i.self.query.weight"])  # fmt: skip
    with pytest.raises(ConfigError, match="unknown tower"):
        freeze_towers(model, ["audio"])
    with pytest.raises(ConfigError, match="matched no parameter"):
        freeze_towers(torch.nn.Linear(2, 2), ["video"])

"""``ModelConfig.fusion_gate_init``: every fusion gate starts at the given value; 0 keeps the release's closed gates."""

from __future__ import annotations

import dataclasses

import torch

from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import get_model_config


def _gates(model: EgoVLPv2) -> dict[str, float]:
    return {n: p.item() for n, p in model.named_parameters() if n.endswith(("alpha_i2t", "alpha_t2i"))}


def test_default_gates_are_closed_and_fused_text_ignores_the_video():
    torch.manual_seed(0)
    cfg = get_model_config("egovlpv2-tiny")
    model = EgoVLPv2(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, dropout=0.0))).eval()
    gates = _gates(model)
    assert len(gates) == 2 * cfg.num_fusion_layers and set(gates.values()) == {0.0}
    ids, mask = torch.randint(3, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    a = model.fuse(torch.randn(2, 4, 3, 32, 32), ids, mask, video_out="cls").text
    b = model.fuse(torch.randn(2, 4, 3, 32, 32), ids, mask, video_out="cls").text
    torch.testing.assert_close(a, b)  # closed gates: the fused text does not depend on the video


def test_gate_init_opens_every_gate():
    torch.manual_seed(0)
    cfg = get_model_config("egovlpv2-tiny")
    cfg = dataclasses.replace(cfg, fusion_gate_init=0.75, text=dataclasses.replace(cfg.text, dropout=0.0))
    model = EgoVLPv2(cfg).eval()
    gates = _gates(model)
    assert len(gates) == 2 * cfg.num_fusion_layers and set(gates.values()) == {0.75}
    ids, mask = torch.randint(3, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    a = model.fuse(torch.randn(2, 4, 3, 32, 32), ids, mask, video_out="cls").text
    b = model.fuse(torch.randn(2, 4, 3, 32, 32), ids, mask, video_out="cls").text
    assert (a - b).abs().max() > 1e-3  # open gates: the fused text reads the video

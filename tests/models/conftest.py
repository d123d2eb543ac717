import dataclasses

import pytest
import torch

from egovlp.models import EgoVLPv2, get_model_config


def randomise_(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter (gates, zero-init time attention, CLS tokens included) random non-trivial values."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
            if p.ndim == 1 and p.numel() > 1:
                p.add_(1.0)  # LayerNorm weights near 1
    return model


@pytest.fixture
def tiny_cfg():
    return get_model_config("egovlpv2-tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, text=dataclasses.replace(tiny_cfg.text, dropout=0.0))
    return randomise_(EgoVLPv2(cfg)).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, 3, 32, 32, generator=g)
    ids = torch.randint(5, 1000, (2, 9), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(2, 9, dtype=torch.long)
    ids[1, 6] = 2
    ids[1, 7:] = 1
    mask[1, 7:] = 0
    ids[0, 8] = 2
    return video, ids, mask

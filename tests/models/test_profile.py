import pytest

from egovlp.models import create_model, get_model_config
from egovlp.models.profile import count_macs, count_parameters


def test_base_model_matches_reference_size_and_compute():
    import torch

    with torch.device("meta"):
        model = create_model("egovlpv2-base")
    counts = count_parameters(model)
    assert counts["total"] / 1e6 == pytest.approx(381.6, rel=0.02)
    assert counts["fusion"] / 1e6 == pytest.approx(28.4, rel=0.02)
    macs = count_macs(get_model_config("egovlpv2-base"), num_frames=4, text_tokens=15)
    assert macs.dual_video == pytest.approx(92.4, rel=0.02)
    assert macs.dual_text == pytest.approx(1.3, rel=0.02)
    assert macs.fused == pytest.approx(105.1, rel=0.02)


def test_macs_grow_with_frames():
    cfg = get_model_config("egovlpv2-tiny")
    four, eight = count_macs(cfg, 4), count_macs(cfg, 8)
    assert eight.dual_video > 1.9 * four.dual_video
    assert eight.dual_text == four.dual_text


def test_executed_dual_video_is_cheaper_than_the_full_tower():
    macs = count_macs(get_model_config("egovlpv2-base"))
    assert 0.9 * macs.dual_video < macs.dual_video_executed < macs.dual_video

"""The QFVS scorer: the release's position table against its loop definition, packed segments against scoring each
segment alone, the BCE terms against hand-computed values, and a round trip through a state dict."""

from __future__ import annotations

import math

import pytest
import torch

from egovlp.models.qfvs_scorer import QFVSScorer, pack_segments, release_position_table, summary_bce_losses


def test_position_table_is_the_releases_loop():
    length, dim = 7, 6
    ref = torch.zeros(length, dim)
    for pos in range(length):
        for i in range(0, dim, 2):
            ref[pos, i] = math.sin(pos / (10000 ** ((2 * i) / dim)))
            ref[pos, i + 1] = math.cos(pos / (10000 ** ((2 * (i + 1)) / dim)))
    torch.testing.assert_close(release_position_table(length, dim), ref)
    with pytest.raises(ValueError, match="even"):
        release_position_table(3, 5)


def test_packed_segments_equal_each_segment_scored_alone():
    torch.manual_seed(0)
    scorer = QFVSScorer(8, num_heads=2, num_layers=2, ff_dim=16).eval()
    features = [torch.randn(9, 8), torch.randn(4, 8)]
    segments = [[(0, 3), (3, 9)], [(0, 4)]]
    packed, lengths = pack_segments(features, segments)
    assert packed.shape == (3, 6, 8) and lengths.tolist() == [3, 6, 4]
    fast = scorer.score(features, segments)
    assert [f.shape for f in fast] == [(9,), (4,)]
    with torch.no_grad():
        for f, segs, got in zip(features, segments, fast):
            slow = torch.cat([scorer(f[a:b][None], torch.tensor([b - a]))[0] for a, b in segs])
            torch.testing.assert_close(got.detach(), slow, rtol=1e-5, atol=1e-5)
    assert float(scorer(packed, lengths)[0, 3:].detach().abs().sum()) == 0.0  # padding positions are 0


def test_head_init_and_state_dict_round_trip():
    scorer = QFVSScorer(8, num_heads=4, num_layers=3, ff_dim=12, last_bias=-1.91)
    assert float(scorer.summ_head.bias.detach()) == pytest.approx(-1.91)
    state = scorer.state_dict()
    assert int(state["num_heads"]) == 4
    again = QFVSScorer.from_state_dict(state)
    assert len(again.transformer_encoder.layers) == 3 and int(again.num_heads) == 4
    assert again.transformer_encoder.layers[0].linear1.out_features == 12
    x, n = torch.randn(2, 5, 8), torch.tensor([5, 2])
    torch.testing.assert_close(scorer.eval()(x, n), again.eval()(x, n))


def test_bce_terms_by_hand():
    logits = {"concept1": torch.tensor([0.0, 0.0]), "concept2": torch.tensor([2.0, -1.0]), "oracle": torch.zeros(2)}
    targets = {"concept1": torch.tensor([1.0, 0.0]), "concept2": torch.tensor([1.0, 1.0]), "oracle": torch.ones(2)}
    out = summary_bce_losses(logits, targets)
    c2 = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert float(out["loss_concept1"]) == pytest.approx(math.log(2))
    assert float(out["loss_concept2"]) == pytest.approx(c2)
    assert float(out["loss"]) == pytest.approx(2 * math.log(2) + c2)

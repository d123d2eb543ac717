"""Two-stage retrieval: the top-k VTM re-ranking against the full pairwise VTM matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egovlp.models.registry import create_model
from egovlp.models.vtm_rerank import (
    full_vtm_matrix,
    rerank,
    score_pairs,
    stream_pair_scores,
    topk_candidates,
    two_stage_similarity,
)

from .conftest import randomise_


def test_rerank_puts_candidates_first_by_vtm_and_keeps_the_cheap_order_below():
    cheap = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.0, 0.2, 0.4, 0.6]])
    candidates = topk_candidates(cheap, 2)
    assert candidates.tolist() == [[0, 2], [3, 2]]
    vtm = torch.tensor([[-5.0, 2.0], [1.0, 3.0]])  # row 0: item 2 beats item 0; row 1: item 2 beats item 3
    out = rerank(cheap, candidates, vtm)
    order = out.argsort(dim=1, descending=True).tolist()
    assert order == [[2, 0, 3, 1], [2, 3, 1, 0]]
    assert out[0, 2] == 2.0 and out[0, 0] == -5.0 and out[1, 3] == 1.0
    assert topk_candidates(torch.tensor([[1.0, 1.0, 0.0]]), 1).tolist() == [[0]]  # ties: the lower index
    with pytest.raises(ValueError, match="k must be in 1..4"):
        topk_candidates(cheap, 5)


@pytest.fixture
def retrieval():
    torch.manual_seed(0)
    model = randomise_(create_model("allinone-test"), 0.3).eval()
    g = torch.Generator().manual_seed(1)
    videos = torch.randn(5, 3, 3, 32, 32, generator=g)
    ids = torch.randint(1, 1000, (4, 6), generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[2, 4:] = 0
    return model, videos, ids, mask


def test_batched_pair_scores_equal_one_pass_per_pair(retrieval):
    model, videos, ids, mask = retrieval
    full = full_vtm_matrix(model.vtm_score, videos, ids, mask, batch_size=7)
    with torch.no_grad():
        for t in range(4):
            for v in range(5):
                one = model.vtm_score(videos[v : v + 1], ids[t : t + 1], mask[t : t + 1])
                torch.testing.assert_close(full[t, v], one[0], rtol=1e-4, atol=1e-5)
    assert score_pairs(model.vtm_score, videos, ids, mask, torch.zeros(0, dtype=torch.long),
                       torch.zeros(0, dtype=torch.long)).shape == (0,)  # fmt: skip


def test_two_stage_with_every_item_is_the_full_ranking_and_top_k_scores_agree(retrieval):
    model, videos, ids, mask = retrieval
    full = full_vtm_matrix(model.vtm_score, videos, ids, mask).double()
    cheap = torch.randn(4, 5, generator=torch.Generator().manual_seed(3))
    everything = two_stage_similarity(model.vtm_score, cheap, videos, ids, mask, k=5)
    torch.testing.assert_close(everything, full, rtol=1e-4, atol=1e-5)
    top2 = two_stage_similarity(model.vtm_score, cheap, videos, ids, mask, k=2)
    candidates = topk_candidates(cheap, 2)
    torch.testing.assert_close(top2.gather(1, candidates), full.gather(1, candidates), rtol=1e-4, atol=1e-5)
    others = torch.ones_like(cheap, dtype=torch.bool).scatter(1, candidates, False)
    for row in range(4):
        assert top2[row][others[row]].max() < top2[row].gather(0, candidates[row]).min()
        below = top2[row][others[row]].argsort(descending=True)
        assert torch.equal(below, cheap[row][others[row]].argsort(descending=True))


def test_streamed_pair_scores_equal_the_in_memory_ones(retrieval):
    model, videos, ids, mask = retrieval
    wanted = {0: np.array([1, 3]), 2: np.array([0]), 4: np.array([0, 1, 2, 3])}  # video index -> texts
    batches = [{"num_skipped": 2}, {"video": videos[:3], "index": torch.tensor([0, 1, 2])},
               {"video": videos[3:], "index": torch.tensor([3, 4])}]  # fmt: skip
    streamed = stream_pair_scores(model.vtm_score, batches, wanted, ids, mask, batch_size=3)
    pairs = [(v, int(t)) for v, texts in wanted.items() for t in texts]
    assert sorted(streamed) == sorted(pairs)
    text_index = torch.tensor([t for _, t in pairs])
    video_index = torch.tensor([v for v, _ in pairs])
    expected = score_pairs(model.vtm_score, videos, ids, mask, text_index, video_index)
    for (v, t), value in zip(pairs, expected.tolist()):
        assert streamed[(v, t)] == pytest.approx(value, rel=1e-4, abs=1e-5)

"""Searching: exact search equals a brute-force ranking, approximate indexes find the exact neighbours, window merging
(hand-built cases with the cap), re-ranking changes the order only within the top K, dual-only models refused."""

from __future__ import annotations

import numpy as np
import pytest

from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import ConfigError
from egovlp.models.weights import load_model
from egovlp.search import AnnConfig, MergeConfig, Searcher, VideoIndex, merge_windows, rerank_order
from egovlp.search.ann import build_ann, search_ann

QUERY = "C picks up the red cube"


@pytest.fixture(scope="module")
def searcher(built, model, small_world):
    return Searcher(VideoIndex.open(built[0]), model, Tokenizer.from_dir(small_world["tokenizer"]),
                    merge=MergeConfig(enabled=False))  # fmt: skip


def test_exact_search_equals_brute_force(searcher):
    index = searcher.index
    vectors = index.ann.reconstruct_n(0, index.num_windows)  # (N, E)
    q = searcher.embed_query(QUERY)
    want = np.argsort(-(vectors @ q), kind="stable")
    ranked = searcher.rank_windows(QUERY, index.num_windows)
    np.testing.assert_array_equal(ranked.ids, want)
    np.testing.assert_allclose(ranked.similarity, (vectors @ q)[want], atol=1e-5)
    moments = searcher.search(QUERY, top_k=5)  # merging off: one moment per window, in the same order
    assert [m.window_ids[0] for m in moments] == want[:5].tolist() and [m.rank for m in moments] == [1, 2, 3, 4, 5]


def _random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_ann_kinds_against_numpy(kind):
    x, q = _random_unit(3000, 32, 0), _random_unit(20, 32, 1)
    want = np.argsort(-(q @ x.T), axis=1)[:, :10]

    def recall(cfg: AnnConfig) -> float:
        index, params = build_ann(x, cfg)
        assert params["kind"] == kind
        ids = search_ann(index, q, 10)[1]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want)]))

    if kind == "ivf":  # every list probed is exact; one list of 32 misses most neighbours (nprobe is applied)
        assert recall(AnnConfig(kind=kind, nlist=32, nprobe=32)) == 1.0
        assert recall(AnnConfig(kind=kind, nlist=32, nprobe=1)) < 0.6
    else:
        assert recall(AnnConfig(kind=kind)) >= (1.0 if kind == "exact" else 0.9)


def test_auto_kind_by_size():
    assert build_ann(_random_unit(50, 8, 0), AnnConfig(kind="auto", exact_max=100))[1]["kind"] == "exact"
    assert build_ann(_random_unit(500, 8, 0), AnnConfig(kind="auto", exact_max=100))[1]["kind"] == "hnsw"


def _merge(windows, **kw):
    v, s, e = (np.array(c, dtype=float) for c in zip(*windows))
    return [(g.video, g.start, g.end, g.windows) for g in merge_windows(v.astype(int), s, e, MergeConfig(**kw))]


def test_merging_neighbouring_windows():
    # ranked windows (video, start, end): 2 s windows every second
    ranked = [(0, 4, 6), (0, 5, 7), (1, 4, 6), (0, 3, 5), (0, 10, 12), (0, 6, 8)]
    assert _merge(ranked) == [(0, 3, 8, [0, 1, 3, 5]), (1, 4, 6, [2]), (0, 10, 12, [4])]
    assert _merge(ranked, enabled=False) == [(v, s, e, [i]) for i, (v, s, e) in enumerate(ranked)]
    # touching counts (gap 0); a 1 s gap merges only with gap >= 1
    assert _merge([(0, 0, 2), (0, 2, 4)]) == [(0, 0, 4, [0, 1])]
    assert _merge([(0, 0, 2), (0, 3, 5)]) == [(0, 0, 2, [0]), (0, 3, 5, [1])]
    assert _merge([(0, 0, 2), (0, 3, 5)], gap=1.0) == [(0, 0, 5, [0, 1])]


def test_the_cap_stops_a_chain_of_overlapping_windows():
    chain = [(0, float(s), float(s) + 2) for s in range(20)]  # a whole 21 s video, every window overlapping the next
    assert _merge(chain, max_seconds=100) == [(0, 0, 21, list(range(20)))]
    groups = _merge(chain, max_seconds=5)
    # in rank order 0-2, 1-3, 2-4, 3-5 merge (0-5 is 5 s), 4-6 would make 6 s: it starts the next moment, and so on
    assert [(s, e) for _, s, e, _ in groups] == [(0, 5), (4, 9), (8, 13), (12, 17), (16, 21)]
    assert all(e - s <= 5 for _, s, e, _ in groups) and sum(len(w) for *_, w in groups) == 20
    # a window longer than the cap is a moment of its own
    assert _merge([(0, 0, 9), (0, 1, 3)], max_seconds=4) == [(0, 0, 9, [0]), (0, 1, 3, [1])]


def test_rerank_order():
    ranked = np.array([7, 3, 9, 1, 4])
    np.testing.assert_array_equal(rerank_order(ranked, np.array([0.1, 0.9, 0.5])), [3, 9, 7, 1, 4])
    np.testing.assert_array_equal(rerank_order(ranked, np.array([0.5, 0.5])), ranked)  # ties keep their order
    with pytest.raises(ValueError):
        rerank_order(ranked, np.zeros(6))


def test_rerank_changes_the_order_only_within_the_top_k(searcher):
    n, k = searcher.index.num_windows, 6
    plain = searcher.rank_windows(QUERY, n)
    reranked = searcher.rank_windows(QUERY, n, rerank=k)
    assert set(reranked.ids[:k]) == set(plain.ids[:k]) and not np.array_equal(reranked.ids[:k], plain.ids[:k])
    np.testing.assert_array_equal(reranked.ids[k:], plain.ids[k:])
    assert np.all(np.diff(reranked.vtm[:k]) <= 0) and np.isnan(reranked.vtm[k:]).all()
    # the VTM scores are the model's probabilities for each window with the query
    want = searcher.vtm_scores(QUERY, plain.ids[:k])
    np.testing.assert_allclose(np.sort(reranked.vtm[:k]), np.sort(want), atol=1e-6)
    moments = searcher.search(QUERY, top_k=k + 2, rerank=k)
    assert [m.vtm is not None for m in moments] == [True] * k + [False] * 2
    assert moments[0].score == moments[0].vtm


def test_dual_only_model_searches_but_is_refused_for_rerank(tmp_path, videos, dual_weights, small_world):
    from egovlp.search import build_index

    from .conftest import index_config

    model = load_model(dual_weights, num_frames=4)
    build_index(index_config(tmp_path / "idx", dual_weights, small_world["tokenizer"]), [str(videos[0])], model)
    searcher = Searcher.from_index(VideoIndex.open(tmp_path / "idx"))
    assert len(searcher.search(QUERY, top_k=2)) == 2
    with pytest.raises(ConfigError, match="--rerank needs a model with a fusion encoder"):
        searcher.search(QUERY, top_k=2, rerank=3)


def test_a_query_model_other_than_the_index_model_is_refused(built, dual_weights, small_world):
    with pytest.raises(ConfigError, match="search with the index's checkpoint|not the checkpoint"):
        Searcher.from_index(VideoIndex.open(built[0]), checkpoint=str(dual_weights))
    with pytest.raises(ConfigError, match="empty query"):
        Searcher.from_index(VideoIndex.open(built[0])).search("   ")

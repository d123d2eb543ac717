"""FAISS indexes over L2-normalised embeddings, scored by inner product (= cosine similarity).

* ``exact``: ``IndexFlatIP``, every vector scored (the reference the others are measured against);
* ``ivf``: ``IndexIVFFlat``: k-means into ``nlist`` lists, a query scores only the vectors of its ``nprobe`` nearest
  lists (exact within them);
* ``hnsw``: ``IndexHNSWFlat``: a graph of ``M`` neighbours per vector, searched greedily with a candidate list of
  ``efSearch``.

``faiss`` is imported when an index is built or read, not at import time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import DataError
from egovlp.search.config import AnnConfig
from egovlp.utils.files import atomic_write

__all__ = ["build_ann", "choose_kind", "read_ann", "search_ann", "set_search_params", "write_ann"]


def choose_kind(cfg: AnnConfig, num_vectors: int) -> str:
    """``cfg.kind``, with ``auto`` resolved by size (exact up to ``exact_max`` vectors, HNSW above)."""
    if cfg.kind != "auto":
        return cfg.kind
    return "exact" if num_vectors <= cfg.exact_max else "hnsw"


def _nlist(cfg: AnnConfig, n: int) -> int:
    wanted = cfg.nlist or round(4 * math.sqrt(n))
    return max(1, min(wanted, n // 39 if n >= 39 else 1))  # faiss wants >= 39 training points per list


def build_ann(vectors: np.ndarray, cfg: AnnConfig, threads: int | None = None) -> tuple[Any, dict]:
    """An index of ``vectors`` ``(N, D)`` float32 (normalised) and its parameters (for the manifest)."""
    import faiss

    if threads is not None:
        faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    kind = choose_kind(cfg, n)
    params: dict[str, Any] = {"kind": kind, "num_vectors": n, "dim": d}
    index: Any
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = _nlist(cfg, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        if n:  # k-means on at most 64 points per list (seeded sample): enough for the centroids, bounded time
            sample = x if n <= 64 * nlist else x[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]
            index.train(sample)
        params.update(nlist=nlist, nprobe=min(cfg.nprobe, nlist))
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        params.update(hnsw_m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
    if n:
        index.add(x)
    set_search_params(index, params)
    return index, params


def set_search_params(index: Any, params: dict) -> None:
    """Apply the search-time parameters (``nprobe``, ``ef_search``) recorded in ``params`` to ``index``."""
    import faiss

    if params.get("kind") == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif params.get("kind") == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


def search_ann(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` ``(Q, k)`` of the ``k`` best vectors per query (``ids`` -1 and score -inf past the end)."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), int(index.ntotal))) if index.ntotal else 1
    scores, ids = index.search(q, k)
    scores = np.where(ids < 0, -np.inf, scores)
    return scores, ids


def write_ann(index: Any, path: str | Path) -> Path:
    """Write ``index`` atomically."""
    import faiss

    return atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def read_ann(path: str | Path, params: dict) -> Any:
    """Read an index written by :func:`write_ann` and set its search parameters."""
    import faiss

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such FAISS index (run `egovlp index` to build it)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise DataError(f"{path}: not a readable FAISS index: {str(e).splitlines()[-1] if str(e) else e}") from None
    set_search_params(index, params)
    return index

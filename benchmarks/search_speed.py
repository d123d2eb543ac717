"""Search speed: query latency (p50 / p99) and recall@10 against exact search, exact vs IVF vs HNSW, on random
normalised vectors; and indexing throughput (windows/s) of ``egovlp index`` on synthetic videos with a tiny model.

    python benchmarks/search_speed.py                          # 1e5 and 1e6 vectors, 256-d, 200 queries
    python benchmarks/search_speed.py --sizes 100000 --threads 2
    python benchmarks/search_speed.py --skip-indexing

``--data clustered`` (default): vectors and queries are noisy copies of N/100 random centres (cosine ~0.7 to their
centre), normalised, like windows of one scene; ``--data uniform``: i.i.d. uniform on the sphere, the hardest case
for approximate search (no structure: the 10 nearest neighbours are barely nearer than the rest). Latency is one
query at a time (as `egovlp search` does), wall-clock, after one warm-up query. Build time includes IVF training
(on at most 64 points per list).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from egovlp.search.ann import build_ann, search_ann
from egovlp.search.config import AnnConfig


def unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency(index, queries: np.ndarray, k: int = 10) -> tuple[float, float, np.ndarray]:
    """p50, p99 (ms) of one-query searches and the ``(Q, k)`` ids."""
    search_ann(index, queries[:1], k)
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        ids.append(search_ann(index, q[None], k)[1][0])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), np.stack(ids)


def recall_at(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


def clustered(n: int, num_queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = unit(max(1, n // 100), dim, rng)

    def draw(m: int) -> np.ndarray:
        c = centres[rng.integers(0, len(centres), m)]
        x = c + rng.standard_normal((m, dim), dtype=np.float32) * np.float32(1.0 / np.sqrt(dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(num_queries)


def ann_rows(n: int, dim: int, num_queries: int, threads: int, seed: int, data: str, kinds: list[str]) -> list[tuple]:
    rng = np.random.default_rng(seed)
    x, q = (
        clustered(n, num_queries, dim, rng) if data == "clustered" else (unit(n, dim, rng), unit(num_queries, dim, rng))
    )
    rows = []
    t = time.perf_counter()
    exact, _ = build_ann(x, AnnConfig(kind="exact"), threads=threads)
    build = time.perf_counter() - t
    p50, p99, truth = latency(exact, q)
    rows.append((n, "exact (FlatIP)", "-", build, p50, p99, 1.0))
    del exact
    sweeps = {"ivf": [("nprobe", v) for v in (8, 32, 128)], "hnsw": [("ef_search", v) for v in (32, 128, 512)]}
    for kind, settings in ((k, sweeps[k]) for k in kinds):
        t = time.perf_counter()
        index, params = build_ann(x, AnnConfig(kind=kind), threads=threads)
        build = time.perf_counter() - t
        for name, value in settings:
            from egovlp.search.ann import set_search_params

            params = {**params, name: min(value, params.get("nlist", value))}
            set_search_params(index, params)
            p50, p99, ids = latency(index, q)
            label = f"IVFFlat nlist={params['nlist']}" if kind == "ivf" else f"HNSWFlat M={params['hnsw_m']}"
            rows.append((n, label, f"{name}={params[name]}", build, p50, p99, recall_at(ids, truth)))
            build = float("nan")  # built once per kind
        del index
    return rows


def indexing_rows(threads: int) -> list[tuple]:
    """Windows/s of build_index on the synthetic world's 5 chunked 40 s videos (tiny EgoVLPv2, 2 s windows, 1 s
    stride, 4 frames at 32 px), decoding in the main process."""
    import torch

    from egovlp.config import load_config
    from egovlp.data.synthetic import SynthConfig, generate
    from egovlp.models import get_model_config
    from egovlp.models.model import EgoVLPv2
    from egovlp.models.weights import load_model, save_weights
    from egovlp.search import IndexConfig, build_index

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(seed=3, num_videos=5, video_seconds=40.0, chunk_seconds=15.0, num_mcq_inter=6,
                          num_mcq_intra=7, mcq_pairs_per_video=4, tokenizer_vocab_size=300, workers=1)  # fmt: skip
        world = generate(Path(tmp) / "world", cfg)
        torch.manual_seed(0)
        w = save_weights(EgoVLPv2(get_model_config("egovlpv2-tiny-smallproj")), Path(tmp) / "tiny.safetensors")
        model = load_model(w, num_frames=4)
        videos = sorted(str(p) for p in world["videos"].iterdir() if p.is_dir())
        for workers in (0, 1):
            out = Path(tmp) / f"idx{workers}"
            icfg = load_config(IndexConfig, None, [f"checkpoint={w}", f"out_dir={out}", "progress=false",
                                                   f"num_workers={workers}"])  # fmt: skip
            t = time.perf_counter()
            r = build_index(icfg, videos, model)
            total = time.perf_counter() - t
            rows.append((workers, r.num_new_windows, r.seconds, r.num_new_windows / r.seconds, total))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="FAISS / torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--kinds", nargs="+", choices=("ivf", "hnsw"), default=["ivf", "hnsw"], help="besides exact")
    p.add_argument("--skip-indexing", action="store_true")
    args = p.parse_args()
    print(f"query latency (1 query at a time, {args.threads} threads) and recall@10 vs exact, {args.dim}-d "
          f"{args.data} vectors, {args.queries} queries")  # fmt: skip
    print(f"{'N':>9}  {'index':<24} {'setting':<14} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'R@10':>6}")
    for n in args.sizes:
        for n_, label, setting, build, p50, p99, rec in ann_rows(
            n, args.dim, args.queries, args.threads, args.seed, args.data, args.kinds
        ):
            b = f"{build:8.1f}" if build == build else f"{'':>8}"
            print(f"{n_:>9}  {label:<24} {setting:<14} {b} {p50:8.2f} {p99:8.2f} {rec:6.3f}", flush=True)
    if not args.skip_indexing:
        print("\nindexing throughput: 5 synthetic chunked 40 s videos, tiny EgoVLPv2 (32 px, 4 frames), 2 s / 1 s")
        print(f"{'decode workers':>14} {'windows':>8} {'embed s':>8} {'windows/s':>10} {'total s':>8}")
        for workers, n, secs, rate, total in indexing_rows(args.threads):
            print(f"{workers:>14} {n:>8} {secs:8.1f} {rate:10.1f} {total:8.1f}")


if __name__ == "__main__":
    main()

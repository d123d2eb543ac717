"""Search quality on the synthetic world: window-level recall of every narration of the indexed videos as a query.

    python benchmarks/search_recall.py demo/search/index demo/data/narration.json          # after `make demo`
    python benchmarks/search_recall.py INDEX narration.json --rerank 0 5 10 20

Every distinct narration text of the indexed (chunked) videos is asked once, cleaned as in training. A window is
true when it overlaps an occurrence of that text in its own video (narration time +- 1 s, the rule of the demo's
search stage, :mod:`egovlp.cli.demo_search`). Recall@k = the share of queries with a true window among the first k
windows (no merging), for the dual ranking and for fusion re-ranking of the top K windows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from egovlp.cli.demo_search import TRUE_SECONDS
from egovlp.data.text import clean_narration
from egovlp.search import MergeConfig, Searcher, VideoIndex


def occurrences(index: VideoIndex, narrations: dict) -> dict[str, list[tuple[int, float]]]:
    """text -> [(video number in the index, narration time)] for the index's chunked videos."""
    where: dict[str, list[tuple[int, float]]] = {}
    for number, video in enumerate(index.videos):
        uid = Path(video.source).name
        for n in narrations.get(uid, {}).get("narration_pass_1", {}).get("narrations", []):
            where.setdefault(clean_narration(n["narration_text"]), []).append((number, float(n["timestamp_sec"])))
    return where


def first_true(index: VideoIndex, ids: np.ndarray, places: list[tuple[int, float]]) -> int:
    """Rank (0-based) of the first true window of ``ids``; len(ids) when none is."""
    video, start, end = index.window_video[ids], index.window_start[ids], index.window_end[ids]
    true = np.zeros(len(ids), dtype=bool)
    for number, t in places:
        true |= (video == number) & (start < t + TRUE_SECONDS) & (end > t - TRUE_SECONDS)
    return int(np.argmax(true)) if true.any() else len(ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="an index folder (egovlp index)")
    p.add_argument("narrations", help="the narration.json of the indexed videos")
    p.add_argument("--rerank", type=int, nargs="+", default=[0, 5, 10, 20], help="K values (0: dual only)")
    p.add_argument("--depth", type=int, default=50, help="windows ranked per query")
    args = p.parse_args()
    index = VideoIndex.open(args.index)
    searcher = Searcher.from_index(index, merge=MergeConfig(enabled=False))
    where = occurrences(index, json.loads(Path(args.narrations).read_text(encoding="utf-8")))
    print(f"{len(where)} queries over {len(index.videos)} videos, {index.num_windows} windows")
    print("| ranking | R@1 | R@3 | R@5 | R@10 |\n|---|---|---|---|---|")
    for k in args.rerank:
        ranks = np.array(
            [first_true(index, searcher.rank_windows(text, args.depth, rerank=k).ids, places)
             for text, places in sorted(where.items())]
        )  # fmt: skip
        label = "dual (cosine)" if k == 0 else f"fusion re-rank of the top {k}"
        print(f"| {label} | " + " | ".join(f"{100 * np.mean(ranks < n):.1f}" for n in (1, 3, 5, 10)) + " |")


if __name__ == "__main__":
    main()

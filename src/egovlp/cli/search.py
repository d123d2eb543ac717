"""``egovlp search``: the moments of your indexed videos that match a text query, best first.

egovlp search my_index "where did I put the scissors" --top-k 10
egovlp search my_index "C opens the fridge" --rerank 50 --json

The query's dual text embedding ranks the windows; ``--rerank K`` re-scores the first K with the fusion encoder's
video-text matching probability (models with fusion layers only); neighbouring windows of one moment are merged
(``--max-moment S`` caps a merged moment's length, ``--no-merge`` lists every window).
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an index (egovlp index) with a text query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index_dir", metavar="INDEX_DIR", help="a folder written by `egovlp index`")
    p.add_argument("query", metavar="QUERY", help="what to look for, in words")
    p.add_argument("--top-k", type=int, default=10, metavar="N", help="moments to show (default 10)")
    p.add_argument("--rerank", type=int, default=0, metavar="K", help="re-score the top K windows with the fusion "
                   "encoder (VTM); 0: off (default)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the moments as JSON")
    p.add_argument("--checkpoint", metavar="W.safetensors", help="default: the one recorded in the index")
    p.add_argument("--tokenizer", metavar="DIR", help="default: the one recorded in the index")
    p.add_argument("--max-moment", type=float, default=8.0, metavar="S", help="longest merged moment (default 8 s)")
    p.add_argument("--gap", type=float, default=0.0, metavar="S", help="windows this close still merge (default 0)")
    p.add_argument("--no-merge", action="store_true", help="one result per window")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=run)


def format_table(moments: list, query: str) -> str:
    """A ranked table: rank, video, start-end, score (and the VTM probability when re-ranked)."""
    if not moments:
        return f"no moments for {query!r}"
    width = max(len(m.source) for m in moments)
    lines = [f"{'#':>3}  {'video':<{width}}  {'start-end (s)':>15}  {'score':>7}  {'cosine':>7}"]
    for m in moments:
        span = f"{m.start:.1f}-{m.end:.1f}"
        lines.append(f"{m.rank:>3}  {m.source:<{width}}  {span:>15}  {m.score:7.4f}  {m.similarity:7.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from egovlp.search import MergeConfig, Searcher, VideoIndex
    from egovlp.train.distributed import resolve_device

    merge = MergeConfig(enabled=not args.no_merge, gap=args.gap, max_seconds=args.max_moment)
    index = VideoIndex.open(args.index_dir)
    device = resolve_device(args.device)
    searcher = Searcher.from_index(index, args.checkpoint, args.tokenizer, device, merge)
    moments = searcher.search(args.query, top_k=args.top_k, rerank=args.rerank)
    if args.json:
        print(json.dumps({"query": args.query, "index": str(index.root), "moments": [m.to_dict() for m in moments]},
                         indent=1))  # fmt: skip
    else:
        print(format_table(moments, args.query))
    return 0

"""The last stage of ``egovlp demo``: search the synthetic world's videos with the model just trained.

The first :data:`NUM_VIDEOS` videos of the world are indexed (``egovlp index``: 2 s windows every second, dual
video embeddings in an exact FAISS index, a thumbnail each), two narrations of those videos are asked as text
queries (``egovlp search``: dual ranking, then with the top :data:`RERANK` windows re-scored by the fusion
encoder), and the cross-attention maps of the first query on its best moment are drawn (``egovlp visualize``).

A moment counts as true when it overlaps an occurrence of the same narration in the same video: the narration time
+- :data:`TRUE_SECONDS` (the synthetic actions last 1.6-3.2 s around it). ``narration.json`` lists every action,
the held-out EgoMCQ ones included, so a hit is never missed for want of an annotation.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlp.data.text import clean_narration

log = logging.getLogger(__name__)

NUM_VIDEOS = 4  # videos of the world to index (about 16 minutes of video)
NUM_QUERIES = 2
TOP = 3  # moments shown per query
RERANK = 5  # windows re-scored by the fusion encoder (benchmarks/search_recall.py: the best K of 5, 10, 20)
TRUE_SECONDS = 1.0


@dataclass(frozen=True)
class Occurrence:
    """Where a narration happens: the video's chunk folder and the narration time (s)."""

    source: str
    time: float


def pick_queries(narrations: dict, uids: list[str], root: Path, num: int = NUM_QUERIES) -> dict[str, list[Occurrence]]:
    """``num`` narration texts of the videos ``uids`` (cleaned as in training) and where each occurs.

    The rarest texts first (ties by text), each with another verb than those already taken, so the queries are
    specific and differ in what they ask."""
    where: dict[str, list[Occurrence]] = {}
    for uid in uids:
        for n in narrations[uid]["narration_pass_1"]["narrations"]:
            text = clean_narration(n["narration_text"])
            where.setdefault(text, []).append(Occurrence(str(root / uid), float(n["timestamp_sec"])))
    counts = Counter({text: len(places) for text, places in where.items()})
    chosen: dict[str, list[Occurrence]] = {}
    verbs: set[str] = set()
    for text in sorted(counts, key=lambda t: (counts[t], t)):
        verb = " ".join(text.split()[1:3])  # "picks up", "puts down", "pushes the", ...
        if verb not in verbs:
            chosen[text] = where[text]
            verbs.add(verb)
        if len(chosen) == num:
            break
    return chosen


def is_true(moment: Any, places: list[Occurrence]) -> bool:
    """Whether ``moment`` overlaps an occurrence (narration time +- TRUE_SECONDS) in its own video (the index
    records absolute paths; the occurrences may be relative)."""
    source = Path(moment.source).resolve()
    return any(
        Path(p.source).resolve() == source
        and moment.start < p.time + TRUE_SECONDS
        and moment.end > p.time - TRUE_SECONDS
        for p in places
    )


def _lines(label: str, moments: list, places: list[Occurrence]) -> list[str]:
    hit = any(is_true(m, places) for m in moments)
    lines = [f"  {label}: true moment in the top {TOP}: {'yes' if hit else 'no'}"]
    for m in moments:
        name = Path(m.source).name[:8]
        mark = "  <- true" if is_true(m, places) else ""
        lines.append(f"    {m.rank}. video {name} {m.start:6.1f}-{m.end:6.1f} s  score {m.score:.3f}{mark}")
    return lines


def search_world(data: Path, manifest: dict, checkpoint: Path, out: Path) -> tuple[str, dict]:
    """Index, search and draw as described above; returns (the printed report, its JSON form)."""
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.weights import load_model
    from egovlp.search import IndexConfig, Searcher, VideoIndex, build_index
    from egovlp.viz import attention_maps, draw_attention
    from egovlp.viz.attention import moment_frames

    videos = data / manifest["files"]["videos"]
    narrations = json.loads((data / manifest["files"]["narrations"]).read_text(encoding="utf-8"))
    uids = sorted(narrations)[:NUM_VIDEOS]
    tokenizer_dir = data / manifest["files"]["tokenizer"]
    cfg = IndexConfig(checkpoint=str(checkpoint), tokenizer=str(tokenizer_dir), out_dir=str(out / "index"),
                      device="cpu", progress=False)  # fmt: skip
    model: Any = load_model(checkpoint, num_frames=cfg.window.num_frames).eval()
    result = build_index(cfg, [str(videos / uid) for uid in uids], model)
    index = VideoIndex.open(result.root)
    searcher = Searcher(index, model, Tokenizer.from_dir(tokenizer_dir))
    queries = pick_queries(narrations, uids, videos)
    lines = [f"Search of {len(uids)} synthetic videos ({index.num_windows} windows of 2 s, index {result.root})"]
    report: dict = {"index": str(result.root), "windows": index.num_windows, "queries": []}
    for text, places in queries.items():
        dual = searcher.search(text, top_k=TOP)
        fused = searcher.search(text, top_k=TOP, rerank=RERANK)
        lines.append(f'"{text}" ({len(places)} occurrence(s) in these videos)')
        lines += _lines("dual", dual, places)
        lines += _lines(f"fusion re-rank of the top {RERANK}", fused, places)
        report["queries"].append({
            "query": text,
            "occurrences": [p.__dict__ for p in places],
            "dual": [dict(m.to_dict(), true=is_true(m, places)) for m in dual],
            "rerank": [dict(m.to_dict(), true=is_true(m, places)) for m in fused],
        })  # fmt: skip
    text, best = next(iter(queries)), report["queries"][0]["rerank"][0]
    ref = index.videos[int(index.window(best["window_ids"][0]).video)].ref
    clip = moment_frames(ref, best["start"], best["end"], model.cfg.video.num_frames)
    png = out / "attention.png"
    draw_attention(attention_maps(model, searcher.tokenizer, clip, text), png,
                   f'"{text}"  {Path(best["source"]).name[:8]} {best["start"]:g}-{best["end"]:g} s')  # fmt: skip
    report["attention_png"] = str(png)
    lines.append(f"cross-attention maps of the first query on its best moment: {png}")
    return "\n".join(lines), report

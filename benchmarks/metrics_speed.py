"""Speed of the EK-100 MIR evaluation and of the relevancy build, vectorised vs the loop references.

    python benchmarks/metrics_speed.py                 # full test-split size 9668 x 3842
    python benchmarks/metrics_speed.py --threads 1     # one worker thread for the metric
    python benchmarks/metrics_speed.py --small 400x150 # size of the vectorised-vs-reference comparison

The annotations are synthetic but shaped like the official test split (97 verb classes, 300 noun classes, 1-3 nouns
per clip, the sentence gallery = the distinct narrations); the similarities are noisy functions of the relevancy,
so rankings are realistic rather than uniform. Prints one table (wall-clock and CPU seconds of all threads); the
reference rows also say whether the results agree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from egovlp.data.epic_mir import EpicClip, EpicSentence, build_relevancy
from egovlp.metrics.reference import mir_per_query_reference
from egovlp.metrics.retrieval import epic_mir_metrics, mir_per_query


def synthetic_annotations(
    num_clips: int, num_sentences: int, seed: int = 0
) -> tuple[list[EpicClip], list[EpicSentence]]:
    """Clips with EK-100-like class statistics and a gallery of ``num_sentences`` of them."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(num_clips):
        verb = int(min(rng.zipf(1.6), 97) - 1)
        nouns = tuple(sorted({int(min(rng.zipf(1.4), 300) - 1) for _ in range(rng.integers(1, 4))}))
        clips.append(
            EpicClip(
                f"P01_{i}", "P01", "P01_01", "00:00:00.000", 0.0, 1.0, 0, 60, f"v{verb} {nouns}", f"v{verb}", verb,
                f"n{nouns[0]}", nouns[0], tuple(f"n{n}" for n in nouns), nouns,
            )
        )  # fmt: skip
    chosen = rng.choice(num_clips, size=num_sentences, replace=False)
    sentences = [EpicSentence(clips[i].narration_id, int(i), clips[i].narration, clips[i].narration) for i in chosen]
    return clips, sentences


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, float, Any]:
    """Best wall-clock seconds, the CPU seconds (all threads) of that run, and the result."""
    best, cpu, out = float("inf"), float("nan"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        if time.perf_counter() - start < best:
            best, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return best, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="9668x3842", help="clips x sentences of the full-size run")
    parser.add_argument("--small", default="400x150", help="clips x sentences of the comparison with the loops")
    parser.add_argument("--threads", type=int, default=None, help="metric worker threads (default: up to 4)")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float, str]] = []  # what, size, wall s, cpu s, note

    n, m = (int(v) for v in args.size.split("x"))
    size = f"{n} x {m}"
    clips, sentences = synthetic_annotations(n, m)
    wall, cpu, rel = timed(lambda: build_relevancy(clips, sentences))
    rows.append(("relevancy build (vectorised)", size, wall, cpu, f"{(rel == 1).mean():.2e} of pairs at 1.0"))
    rng = np.random.default_rng(1)
    sim = (rel + rng.normal(0.0, 0.35, rel.shape)).astype(np.float32)
    wall, cpu, metrics = timed(lambda: epic_mir_metrics(sim, rel, num_threads=args.threads))
    note = f"mAP {100 * metrics.map_avg:.2f} / nDCG {100 * metrics.ndcg_avg:.2f}"
    rows.append(("mAP + nDCG, V2T + T2V (vectorised)", size, wall, cpu, note))
    wall, cpu, _ = timed(lambda: epic_mir_metrics(sim, rel, num_threads=1))
    rows.append(("  same, 1 worker thread", size, wall, cpu, ""))

    n, m = (int(v) for v in args.small.split("x"))
    size = f"{n} x {m}"
    small_clips, small_sentences = synthetic_annotations(n, m, seed=2)
    fast_wall, cpu, rel_small = timed(lambda: build_relevancy(small_clips, small_sentences), repeat=3)
    rows.append(("relevancy build (vectorised)", size, fast_wall, cpu, ""))
    wall, cpu, rel_loop = timed(lambda: _relevancy_loop(small_clips, small_sentences))
    agree = "agree" if np.allclose(rel_small, rel_loop, rtol=0, atol=1e-12) else "DIFFER"
    rows.append(("relevancy build (set loops)", size, wall, cpu, f"{wall / fast_wall:.0f}x slower, {agree}"))
    sim_small = (rel_small + rng.normal(0.0, 0.35, rel_small.shape)).astype(np.float32)
    fast_wall, cpu, fast = timed(lambda: mir_per_query(sim_small, rel_small, num_threads=1), repeat=3)
    rows.append(("AP + nDCG per video (vectorised)", size, fast_wall, cpu, ""))
    wall, cpu, loop = timed(lambda: mir_per_query_reference(sim_small, rel_small))
    agree = "agree" if all(np.allclose(a, b, rtol=1e-12, equal_nan=True) for a, b in zip(fast, loop)) else "DIFFER"
    rows.append(("AP + nDCG per video (loop reference)", size, wall, cpu, f"{wall / fast_wall:.0f}x slower, {agree}"))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'size':>12}  {'wall s':>7}  {'cpu s':>7}  notes")
    for what, size, wall, cpu, note in rows:
        print(f"{what:<{width}}  {size:>12}  {wall:>7.3f}  {cpu:>7.3f}  {note}")


def _relevancy_loop(clips: list[EpicClip], sentences: list[EpicSentence]) -> np.ndarray:
    out = np.zeros((len(clips), len(sentences)))
    for i, clip in enumerate(clips):
        for j, sentence in enumerate(sentences):
            other = clips[sentence.clip_index]
            a, b = set(clip.all_noun_classes), set(other.all_noun_classes)
            out[i, j] = ((clip.verb_class == other.verb_class) + (len(a & b) / len(a | b) if a | b else 1.0)) / 2
    return out


if __name__ == "__main__":
    main()

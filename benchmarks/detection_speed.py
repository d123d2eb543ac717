"""Speed of the Ego4D MQ metrics (detection mAP + retrieval recall), vectorised vs the loop references.

    python benchmarks/detection_speed.py                      # full Ego4D-val size: 4500 clips x 1000 segments
    python benchmarks/detection_speed.py --small 40x100       # a smaller vectorised-vs-loop comparison
    python benchmarks/detection_speed.py --clips 1000         # a smaller full-size run

The data are synthetic but shaped like Ego4D MQ val: 480 s clips, 110 classes with a long-tailed frequency, 1-8
ground-truth moments per clip of 2-60 s; per clip a ranked list of segments, a fifth of them jittered copies of the
ground truth with the right class (so every threshold has true positives and matches compete), the rest random
segments of random classes. Prints one table (wall-clock and CPU seconds); the loop rows say whether the results agree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from egovlp.metrics.detection import Moments, detection_map, moment_recall, mq_metrics
from egovlp.metrics.reference_detection import detection_ap_reference, moment_recall_reference

NUM_CLASSES = 110
CLIP_SECONDS = 480.0


def synthetic_mq(num_clips: int, per_clip: int, seed: int = 0) -> tuple[Moments, Moments]:
    """Ground truth and predictions (``per_clip`` segments per clip) shaped like Ego4D MQ val."""
    rng = np.random.default_rng(seed)
    class_p = 1.0 / np.arange(1, NUM_CLASSES + 1) ** 0.8
    class_p /= class_p.sum()
    counts = rng.integers(1, 9, num_clips)
    g_video = np.repeat(np.arange(num_clips), counts)
    g_label = rng.choice(NUM_CLASSES, size=len(g_video), p=class_p)
    g_len = rng.uniform(2.0, 60.0, len(g_video))
    g_start = rng.uniform(0.0, CLIP_SECONDS - g_len)
    g_seg = np.stack([g_start, g_start + g_len], axis=1)

    n_pred = num_clips * per_clip
    p_video = np.repeat(np.arange(num_clips), per_clip)
    p_label = rng.choice(NUM_CLASSES, size=n_pred, p=class_p)
    p_len = rng.uniform(1.0, 80.0, n_pred)
    p_start = rng.uniform(0.0, CLIP_SECONDS - p_len)
    p_seg = np.stack([p_start, p_start + p_len], axis=1)
    p_score = rng.uniform(0.0, 0.6, n_pred)
    # a fifth of each clip's segments: jittered copies of its ground truth, right class, higher scores
    near = rng.random(n_pred) < 0.2
    first_gt = np.cumsum(counts) - counts
    source = first_gt[p_video[near]] + (rng.random(near.sum()) * counts[p_video[near]]).astype(np.int64)
    jitter = rng.normal(0.0, 0.25, (near.sum(), 2)) * g_len[source, None]
    seg = np.sort(g_seg[source] + jitter, axis=1)
    p_seg[near] = seg
    p_label[near] = g_label[source]
    p_score[near] = rng.uniform(0.2, 1.0, near.sum())
    clip_ids = np.array([f"{i:08x}-0000-4000-8000-{seed:012x}" for i in range(num_clips)])  # uid-like, 36 chars
    gt = Moments(clip_ids[g_video], g_label, g_seg)
    return gt, Moments(clip_ids[p_video], p_label, p_seg, p_score)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and CPU seconds of one run, and the result."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - start_cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4500, help="clips of the full-size run")
    parser.add_argument("--per-clip", type=int, default=1000, help="ranked segments per clip of the full-size run")
    parser.add_argument("--small", default="100x200", help="clips x segments of the comparison with the loops")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float, str]] = []  # what, size, wall s, cpu s, note

    n, m = (int(v) for v in args.small.split("x"))
    size = f"{n} x {m}"
    gt, pred = synthetic_mq(n, m, seed=1)
    wall, cpu, fast = timed(lambda: detection_map(gt, pred))
    rows.append(("detection mAP (vectorised)", size, wall, cpu, f"average mAP {100 * fast.average_map:.2f}"))
    wall, cpu, ref = timed(lambda: detection_ap_reference(gt, pred))
    ref_ap = np.array([ref[c] for c in fast.classes]).T
    rows.append(("detection mAP (loop reference)", size, wall, cpu, f"agree: {np.allclose(ref_ap, fast.ap)}"))
    wall, cpu, fast_r = timed(lambda: moment_recall(gt, pred))
    rows.append(("retrieval recall (vectorised)", size, wall, cpu, f"R1x@0.5 {100 * fast_r.recall[(1, 0.5)]:.2f}"))
    wall, cpu, ref_r = timed(lambda: moment_recall_reference(gt, pred))
    agree = all(np.isclose(ref_r[k], fast_r.recall[k]) for k in ref_r)
    rows.append(("retrieval recall (loop reference)", size, wall, cpu, f"agree: {agree}"))

    size = f"{args.clips} x {args.per_clip}"
    wall, cpu, (gt, pred) = timed(lambda: synthetic_mq(args.clips, args.per_clip))
    rows.append(("synthetic data", size, wall, cpu, f"{len(gt)} moments, {len(pred)} predictions"))
    wall, cpu, det = timed(lambda: detection_map(gt, pred))
    note = " / ".join(f"{100 * v:.2f}" for v in det.mean_ap) + f", average {100 * det.average_map:.2f}"
    rows.append(("detection mAP@0.1..0.5 (vectorised)", size, wall, cpu, note))
    wall, cpu, rec = timed(lambda: moment_recall(gt, pred))
    note = f"R1x@0.5 {100 * rec.recall[(1, 0.5)]:.2f}, R5x@0.5 {100 * rec.recall[(5, 0.5)]:.2f}"
    rows.append(("retrieval Recall@1..5x (vectorised)", size, wall, cpu, note))
    wall, cpu, both = timed(lambda: mq_metrics(gt, pred))
    agree = both.to_dict() == {**det.to_dict(), **rec.to_dict()}
    rows.append(("mq_metrics: both, one encoding", size, wall, cpu, f"same numbers: {agree}"))

    print(f"{'what':<38} {'size':>14} {'wall s':>9} {'cpu s':>9}  note")
    for what, size, wall, cpu, note in rows:
        print(f"{what:<38} {size:>14} {wall:>9.3f} {cpu:>9.3f}  {note}")


if __name__ == "__main__":
    main()

"""The uniform-proposal baseline of Ego4D MQ (egovlp.episodic.baselines) scored with the official metrics.

    python benchmarks/mq_baseline.py WORLD/episodic/moments_train.json WORLD/episodic/moments_val.json

Prints the same numbers `egovlp evaluate mq` reports (percent), for the README's comparison with a trained detector.
"""

from __future__ import annotations

import argparse

import numpy as np

from egovlp.data.moments import load_moments
from egovlp.episodic.baselines import uniform_proposals
from egovlp.metrics.detection import Moments, mq_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", help="moments_train.json (length and class statistics)")
    parser.add_argument("val", help="moments_val.json (scored)")
    parser.add_argument("--stride", type=float, default=0.5, help="step between proposals, part of the length")
    args = parser.parse_args()
    train = load_moments(args.train)
    val = load_moments(args.val, classes=train.classes)
    uids, labels, segments, scores = uniform_proposals(val.clips, train.clips, len(train.classes), args.stride)
    gt = [(c.clip_uid, lab, seg) for c in val.clips for lab, seg in zip(c.labels, c.segments)]
    truth = Moments([g[0] for g in gt], np.array([g[1] for g in gt]), np.array([g[2] for g in gt]))
    metrics = mq_metrics(truth, Moments(uids, labels, segments, scores)).to_dict()
    print(f"uniform proposals: {len(scores)} segments over {len(val.clips)} clips, {len(truth)} ground truths")
    print("  ".join(f"{k}={v:.2f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()

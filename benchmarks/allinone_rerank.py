"""Full pairwise VTM retrieval vs two-stage retrieval (cheap candidates, VTM re-ranking of the top k) for All-in-one.

    python benchmarks/allinone_rerank.py                                   # random allinone-test-vtc, random clips
    python benchmarks/allinone_rerank.py --checkpoint run/model.safetensors --world demo/data --clips 64 --ks 1,5,10

Text-to-video retrieval over N (narration, clip) pairs of an EgoClip-format folder (``egoclip.csv``, ``videos/``,
``tokenizer/``: what ``egovlp data synth`` writes), the ground truth being the diagonal. Without ``--world`` the
clips and texts are random (costs only: the recalls are then at chance). Printed per method: the joint (VTM) passes
it runs, its wall time, text-to-video R@1 / R@5 / R@10 (optimistic ties, as the release's ``t2v_metrics``) and the
difference from full VTM. The cheap stage is the cosine of the contrastive features (``encode_text`` /
``encode_video``: the 512-d projections of a VTC-trained checkpoint, or the unprojected [CLS] states of one without,
which are not aligned and make poor candidates). Full VTM runs N x N joint passes, the two-stage ranking N x k.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from egovlp.metrics.retrieval import recall_at_k
from egovlp.models.allinone_model import AllInOne
from egovlp.models.registry import create_model
from egovlp.models.vtm_rerank import full_vtm_matrix, two_stage_similarity

log = logging.getLogger("allinone_rerank")


def load_pairs(world: Path, model: AllInOne, clips: int, text_len: int) -> tuple[torch.Tensor, dict]:
    """The first ``clips`` clips of ``world/egoclip.csv`` (middle frames of each segment, eval crop) and their
    narrations tokenised with ``world/tokenizer``."""
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.data.transforms import eval_transform

    cfg = model.cfg
    dataset = EgoClipDataset(
        world / "egoclip.csv", world / "videos", cfg.video.num_frames, eval_transform(cfg.video.img_size),
        sample="uniform", max_rows=clips, num_verbs=10_000, num_nouns=10_000,
    )  # fmt: skip
    items = [dataset[i] for i in range(min(clips, len(dataset)))]
    tokenizer = Tokenizer.from_dir(world / "tokenizer")
    tokens = tokenizer([it["text"] for it in items], max_length=text_len)
    return torch.stack([it["video"] for it in items]), tokens


def random_pairs(model: AllInOne, clips: int, text_len: int) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(0)
    v = model.cfg.video
    videos = torch.randn(clips, v.num_frames, 3, v.img_size, v.img_size, generator=g)
    ids = torch.randint(5, model.cfg.text.vocab_size, (clips, text_len), generator=g)
    return videos, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def recalls(similarity: torch.Tensor) -> tuple[float, float, float]:
    r = recall_at_k(similarity.double().numpy(), ks=(1, 5, 10), ties="optimistic").recall
    return 100 * r[1], 100 * r[5], 100 * r[10]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="egovlp weights of an All-in-one model (default: random)")
    p.add_argument("--arch", default="allinone-test-vtc", help="architecture of the random model")
    p.add_argument("--world", default="", help="EgoClip-format folder (default: random clips and texts)")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--ks", default="1,5,10", help="k values of the two-stage ranking")
    p.add_argument("--text-len", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64, help="joint passes per forward")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    if args.checkpoint:
        from egovlp.models.weights import load_model

        model = load_model(args.checkpoint)
    else:
        model = create_model(args.arch)
    assert isinstance(model, AllInOne), "an All-in-one model is needed"
    model = model.to(args.device).eval()
    if args.world:
        videos, tokens = load_pairs(Path(args.world), model, args.clips, args.text_len)
    else:
        videos, tokens = random_pairs(model, args.clips, args.text_len)
    device = torch.device(args.device)
    videos = videos.to(device)
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    n = videos.shape[0]
    print(f"{model.cfg.arch}: {n} texts x {n} clips, {model.cfg.video.num_frames} frames, "
          f"{'projections ' + str(model.cfg.embed_dim) + '-d' if model.cfg.has_projections else 'no projections'}, "
          f"{'world ' + args.world if args.world else 'random data'}, {args.device}")  # fmt: skip

    with torch.no_grad():
        start = time.perf_counter()
        cheap = model.encode_text(ids, mask, normalize=True) @ model.encode_video(videos, normalize=True).T
        cheap_s = time.perf_counter() - start
        start = time.perf_counter()
        full = full_vtm_matrix(model.vtm_score, videos, ids, mask, args.batch_size)
        full_s = time.perf_counter() - start
    base = recalls(full)
    rows = [("cheap (cosine)", 0, cheap_s, recalls(cheap.cpu())), ("full VTM", n * n, full_s, base)]
    for k in (int(x) for x in args.ks.split(",") if x):
        k = min(k, n)
        with torch.no_grad():
            start = time.perf_counter()
            sim = two_stage_similarity(model.vtm_score, cheap.cpu(), videos, ids, mask, k, args.batch_size)
            seconds = time.perf_counter() - start + cheap_s
        rows.append((f"top-{k} re-rank", n * k, seconds, recalls(sim)))
    print(
        f"{'method':18s}{'VTM passes':>12s}{'seconds':>10s}{'R@1':>8s}{'R@5':>8s}{'R@10':>8s}{'dR@1':>8s}{'dR@5':>8s}"
    )
    for name, passes, seconds, (r1, r5, r10) in rows:
        print(
            f"{name:18s}{passes:12d}{seconds:10.2f}{r1:8.1f}{r5:8.1f}{r10:8.1f}{r1 - base[0]:8.1f}{r5 - base[1]:8.1f}"
        )
    print("(seconds of a re-rank include the cheap stage; dR = recall minus full VTM's, in points)")


if __name__ == "__main__":
    main()

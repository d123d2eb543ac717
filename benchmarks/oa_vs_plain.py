"""OA-Trans object streams vs the same run without them, on the synthetic world's EgoMCQ (CPU, a few minutes).

Both runs train the same tiny Frozen-in-Time (``frozen-in-time-tiny``, 32 px, patch 8, text tower from scratch) from
the same seed on the same EgoClip clips, for the same steps: once with NormSoftmax only (``loss.objective=normsoftmax``)
and once with the OA-Trans four-stream contrast (``loss.objective=oa_trans``) on the world's exact detections.
The EgoMCQ questions are the world's held-out clips (inter-video: which clip shows the narrated object and action;
intra-video: which one shows the narrated direction of motion). Prints one row per run and seed (dual accuracy, %).

    python benchmarks/oa_vs_plain.py [--steps 300] [--seeds 0 1] [--workdir /tmp/egovlp_oa_bench]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from egovlp.cli.main import main
from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.synthetic import SynthConfig, generate
from egovlp.data.text import clean_narration
from egovlp.data.tokenizer import Tokenizer

PRESET = Path(__file__).resolve().parents[1] / "src" / "egovlp" / "configs" / "pretrain" / "demo.yaml"


def run(world, tokenizer: Path, out: Path, objective: str, steps: int, seed: int, batch: int) -> dict:
    vocab = Tokenizer.from_dir(tokenizer).vocab_size
    values = {
        "model.arch": "frozen-in-time-tiny", "model.video.patch_size": 8, "model.text.vocab_size": vocab,
        "model.text.pad_token_id": 0, "model.fusion_gate_init": 0.0,
        "init.roberta": "", "optim.freeze": "[]", "optim.lr": 1e-3, "data.tokenizer": tokenizer,
        "data.video_root": world["videos"], "data.metadata": world["egoclip"], "data.chunk_seconds": 0,
        "data.num_verbs": world.num_verbs, "data.num_nouns": world.num_nouns, "data.batch_size": batch,
        "data.num_workers": 1, "data.scene_negatives": False, "egomcq.metadata": world["egomcq"],
        "egomcq.video_root": world["videos"], "egomcq.num_workers": 1, "loss.objective": objective,
        "oa.detections": world["detections"], "oa.vocab": world["objects_vocab"], "oa.top_k": 3,
        "train.output_dir": out, "train.max_steps": steps, "train.eval_every": steps, "train.save_every": steps,
        "train.log_every": 50, "train.progress": False, "train.tensorboard": False, "train.seed": seed,
        "train.device": "cpu",
    }  # fmt: skip
    start = time.perf_counter()
    assert main(["pretrain", "--config", str(PRESET), *[f"{k}={v}" for k, v in values.items()]]) == 0
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "eval"][-1]
    return {"inter": final["egomcq/dual/inter"], "intra": final["egomcq/dual/intra"], "seconds": seconds}


def main_cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workdir", default="/tmp/egovlp_oa_bench")
    args = p.parse_args()
    work = Path(args.workdir)
    world = generate(work / "world", SynthConfig(workers=2))
    tokenizer = work / "wordpiece"
    if not tokenizer.is_dir():
        table = load_egoclip(world["egoclip"])
        texts = [clean_narration(table.text(i)) for i in range(len(table))]
        Tokenizer.train(texts, 400, tokenizer, min_frequency=1, kind="wordpiece")
    rows = []
    for seed in args.seeds:
        for objective in ("normsoftmax", "oa_trans"):
            r = run(world, tokenizer, work / f"{objective}_{seed}", objective, args.steps, seed, args.batch)
            rows.append((objective, seed, r))
    print(f"\nEgoMCQ dual accuracy (%) after {args.steps} steps of batch {args.batch}, {world.num_clips} clips")
    print(f"{'objective':14s}{'seed':>6s}{'inter':>9s}{'intra':>9s}{'seconds':>10s}")
    for objective, seed, r in rows:
        print(f"{objective:14s}{seed:6d}{r['inter']:9.2f}{r['intra']:9.2f}{r['seconds']:10.0f}")


if __name__ == "__main__":
    main_cli()

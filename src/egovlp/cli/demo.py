"""``egovlp demo``: the main job on the built-in synthetic world, end to end on a CPU (what ``make demo`` runs).

1. generate the synthetic egocentric world (official EgoClip / EgoMCQ formats) unless it is already there;
2. pre-train the tiny text tower with masked language modelling on the world's narrations (the part roberta-base
   plays for the release: EgoVLPv2 starts from a language model that already tells sentences apart);
3. pre-train a tiny EgoVLPv2 with EgoNCE + MLM + VTM, its text tower initialised from step 2 and kept fixed, the
   video tower and the fusion modules from scratch (resumes if interrupted);
4. evaluate EgoMCQ with dual, fusion and ensemble scores, and again with every option clip's frames reversed;
5. print the accuracy table next to chance, and where the checkpoint and the loss curve were written;
6. index a few of the world's videos with the trained model, search them with two narrations (dual ranking and
   fusion re-ranking; is the true moment in the top 3?) and draw the first query's cross-attention maps
   (:mod:`egovlp.cli.demo_search`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_LOSSES = ("loss", "egonce", "mlm", "vtm")

# Shipped presets (egovlp/configs/pretrain/*.yaml), so the demo runs from any directory once installed.
DEFAULT_CONFIG = "pretrain/demo"
TEXT_CONFIG = "pretrain/demo_text"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="pre-train and evaluate a tiny EgoVLPv2 on synthetic data (CPU, minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="demo", help="output folder (data/ and run/ go inside)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pre-training config (default {DEFAULT_CONFIG})")
    p.add_argument("--text-config", default=TEXT_CONFIG, help=f"text-tower MLM config, stage 1 (default {TEXT_CONFIG})")
    p.add_argument(
        "--text-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a stage-1 config override (repeatable; model.* comes from stage 2's config)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pre-training (stage 2) config overrides")
    p.set_defaults(func=run)


def _world(out: Path):
    from egovlp.data.synthetic import SynthConfig, generate

    manifest = out / "manifest.json"
    if manifest.is_file():
        log.info("using the synthetic world in %s", out)
        return json.loads(manifest.read_text())
    log.info("generating the synthetic world in %s", out)
    generate(out, SynthConfig())
    return json.loads(manifest.read_text())


def _require(path: str) -> None:
    """Fail before any training starts if a demo config names neither a YAML file nor a shipped preset."""
    from egovlp.configs import resolve_config

    resolve_config(path, "pretrain")


def _configs(args: argparse.Namespace, data: Path, manifest: dict):
    """(text MLM config, pre-training config) on the world in ``data``; both use the pre-training config's model."""
    import dataclasses

    from egovlp.cli.common import load_experiment_config
    from egovlp.tasks.pretrain import PretrainConfig
    from egovlp.tasks.text_mlm import ROBERTA_DIR, TextMLMConfig

    _require(args.config)
    _require(args.text_config)
    out = Path(args.out)
    videos, chunk = data / manifest["files"]["videos"], manifest["config"]["chunk_seconds"]
    tokenizer = data / manifest["files"]["tokenizer"]
    paths = {
        "data.video_root": videos,
        "data.metadata": data / manifest["files"]["egoclip"],
        "data.tokenizer": tokenizer,
        "data.chunk_seconds": chunk,
        "data.num_verbs": manifest["num_verbs"],
        "data.num_nouns": manifest["num_nouns"],
        "egomcq.metadata": data / manifest["files"]["egomcq"],
        "egomcq.video_root": videos,
        "egomcq.chunk_seconds": chunk,
        "init.roberta": out / "text" / ROBERTA_DIR,
        "train.output_dir": out / "run",
        "train.resume": "auto",
    }
    overrides = [f"{k}={v}" for k, v in paths.items()] + list(args.overrides)
    cfg = load_experiment_config(PretrainConfig, args.config, overrides, group="pretrain")
    text_paths = {
        "data.corpus": data / manifest["files"]["egoclip"],
        "data.tokenizer": tokenizer,
        "train.output_dir": out / "text",
        "train.resume": "auto",
    }
    text_overrides = [f"{k}={v}" for k, v in text_paths.items()] + list(args.text_set)
    text_cfg = load_experiment_config(TextMLMConfig, args.text_config, text_overrides, group="pretrain")
    return dataclasses.replace(text_cfg, model=cfg.model), cfg


def _evaluate(cfg, model) -> dict[str, dict[str, float]]:
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.tasks.mcq import EgoMCQEvaluator
    from egovlp.train.distributed import init_distributed

    dist = init_distributed("cpu")
    tokenizer = Tokenizer.from_dir(cfg.data.tokenizer)
    model.eval()
    size = model.cfg.video.img_size
    return {
        "reversed" if reverse else "forward": EgoMCQEvaluator(cfg.egomcq, tokenizer, size, dist, True, reverse)(model)
        for reverse in (False, True)
    }


def format_table(results: dict[str, dict[str, float]]) -> str:
    rows = [("chance", 20.0, 20.0)]
    for direction, suffix in (("forward", ""), ("reversed", ", frames reversed")):
        for mode, label in (("dual", "dual (cosine)"), ("fusion", "fusion (VTM)"), ("ensemble", "ensemble")):
            m = results[direction]
            if f"{mode}/inter" in m:
                rows.append((label + suffix, m[f"{mode}/inter"], m[f"{mode}/intra"]))
    n = int(results["forward"]["questions"])
    lines = [f"EgoMCQ accuracy (%) on the synthetic world ({n} questions)"]
    lines.append(f"{'':34s}{'inter-video':>12s}{'intra-video':>12s}")
    lines += [f"{name:34s}{inter:12.1f}{intra:12.1f}" for name, inter, intra in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.demo_search import search_world
    from egovlp.cli.pretrain import pretrain, pretrain_text
    from egovlp.models.weights import load_model
    from egovlp.tasks.text_mlm import ROBERTA_DIR
    from egovlp.train.plots import plot_losses

    out = Path(args.out)
    data = out / "data"
    manifest = _world(data)
    text_cfg, cfg = _configs(args, data, manifest)
    if (Path(text_cfg.train.output_dir) / ROBERTA_DIR / "model.safetensors").is_file():
        log.info("using the text tower in %s", Path(text_cfg.train.output_dir) / ROBERTA_DIR)
    else:
        log.info("stage 1: masked language modelling of the text tower on the narrations")
        pretrain_text(text_cfg)
    log.info("stage 2: EgoVLPv2 pre-training (EgoNCE + MLM + VTM)")
    pretrain(cfg)
    run_dir = Path(cfg.train.output_dir)
    model = load_model(run_dir / "model.safetensors")
    results = _evaluate(cfg, model)
    (run_dir / "demo_results.json").write_text(json.dumps(results, indent=2))
    png = plot_losses(
        run_dir / "metrics.jsonl", run_dir / "loss_curve.png", "egovlp demo: pre-training losses", DEMO_LOSSES
    )
    log.info("search: indexing the world's videos with the trained model")
    search_report, search_json = search_world(data, manifest, run_dir / "model.safetensors", Path(args.out) / "search")
    (run_dir / "demo_search.json").write_text(json.dumps(search_json, indent=1))
    print()
    print(format_table(results))
    print()
    print(search_report)
    print(f"\ncheckpoint:  {run_dir / 'model.safetensors'} (training state in {run_dir / 'checkpoints'})")
    print(f"text tower:  {Path(text_cfg.train.output_dir) / ROBERTA_DIR} (stage 1)")
    print(f"loss curve:  {png or 'not drawn (needs matplotlib: pip install egovlp[viz])'}")
    print(f"results:     {run_dir / 'demo_results.json'}")
    return 0

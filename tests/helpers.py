"""Helpers shared by test modules (import as ``from helpers import ...``; tests/ is on sys.path)."""


def tiny_pretrain_overrides(world, out_dir, **extra) -> list[str]:
    """Command-line overrides that point configs/pretrain/demo.yaml at ``world`` and make a run of a few steps."""
    values = {
        "data.video_root": world.files["videos"],
        "data.metadata": world.files["egoclip"],
        "data.tokenizer": world.files["tokenizer"],
        "data.chunk_seconds": world.chunk_seconds,
        "data.num_verbs": world.num_verbs,
        "data.num_nouns": world.num_nouns,
        "data.batch_size": 4,
        "data.num_workers": 0,
        "egomcq.metadata": world.files["egomcq"],
        "egomcq.video_root": world.files["videos"],
        "egomcq.chunk_seconds": world.chunk_seconds,
        "egomcq.num_workers": 0,
        "egomcq.batch_size": 4,
        "train.output_dir": out_dir,
        "train.max_steps": 4,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.save_every": 0,
        "train.progress": False,
        "train.tensorboard": False,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]

"""Helpers shared by test modules (import as ``from helpers import ...``; tests/ is on sys.path)."""


def tiny_pretrain_overrides(world, out_dir, **extra) -> list[str]:
    """Command-line overrides that point configs/pretrain/demo.yaml at ``world`` and make a run of a few steps.

    The demo's text tower (``init.roberta``, written by its stage 1) is not used unless ``extra`` sets it.
    """
    values = {
        "init.roberta": "",
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
    return as_overrides(values)


def as_overrides(values: dict) -> list[str]:
    """``{"a.b": 1}`` -> ``["a.b=1"]`` (an empty string stays an empty string, not null)."""
    return [f"{k}={v}" if v != "" else f"{k}=''" for k, v in values.items()]


def kill_and_resume(run, monkeypatch, kill_after: int, steps: dict):
    """``run(name, **overrides)`` once uninterrupted (``"full"``) and once killed after step ``kill_after`` then
    resumed with ``train.resume=auto`` (``"killed"``); returns the (full, resumed) FitResults."""
    import pytest

    from egovlp.train.loop import _Loop

    full = run("full", **steps)

    class Killed(Exception):
        pass

    step_fn = _Loop._optimizer_step

    def killed(self, losses, bar):
        step_fn(self, losses, bar)
        if self.state.step == kill_after:
            raise Killed

    monkeypatch.setattr(_Loop, "_optimizer_step", killed)
    with pytest.raises(Killed):
        run("killed", **steps)
    monkeypatch.setattr(_Loop, "_optimizer_step", step_fn)
    return full, run("killed", **steps, **{"train.resume": "auto"})


def add_mlm(batch: dict, tokenizer, probability: float = 0.15, seed: int = 0) -> dict:
    """``batch`` plus per-row masked ``mlm_input_ids`` / ``mlm_labels`` (what EgoClipCollate adds in pre-training)."""
    from egovlp.data.collate import mask_rows

    seeds = [seed * 1000 + i for i in range(batch["input_ids"].shape[0])]
    ids, labels = mask_rows(batch["input_ids"], batch["attention_mask"], seeds, tokenizer, probability)
    return {**batch, "mlm_input_ids": ids, "mlm_labels": labels}

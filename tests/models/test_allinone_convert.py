"""Conversion of the released All-in-one Lightning checkpoints (official key lists in tests/models/data)."""

from __future__ import annotations

import ast
import dataclasses
import logging
import sys
import types
from pathlib import Path

import pytest
import torch

from egovlp.cli.main import main
from egovlp.errors import CheckpointError
from egovlp.models.allinone import convert_state, official_config
from egovlp.models.allinone_model import AllInOne
from egovlp.models.convert import convert_official_checkpoint, detect_family
from egovlp.models.registry import create_model, get_model_config
from egovlp.models.weights import check_state_dict, load_model, read_model_config

from .conftest import randomise_

REFERENCE = Path(__file__).resolve().parent / "data"
VARIANTS = {"base": 167, "small": 168, "tiny": 167}


def official_state(variant: str, device: str = "meta") -> dict[str, torch.Tensor]:
    """Exactly the official keys, shapes and dtypes of families_state_dicts.txt (random values off meta)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in (REFERENCE / f"official_allinone_{variant}_state_dict.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        size = ast.literal_eval(shape)
        if device == "meta":
            state[key] = torch.empty(size, dtype=getattr(torch, dtype), device="meta")
        else:
            state[key] = (torch.randn(size, generator=g) * 0.05).to(getattr(torch, dtype))
    return state


def meta_model(cfg) -> AllInOne:
    with torch.device("meta"):
        return AllInOne(cfg)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_official_key_maps_onto_ours_strictly(variant):
    raw = official_state(variant)
    assert len(raw) == VARIANTS[variant]
    assert detect_family(raw, "official").name == "allinone"
    cfg = official_config(raw)
    assert cfg == get_model_config(f"allinone-{variant}")  # every constant read back off the shapes
    for frames in (3, 8):
        cfg_f = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_frames=frames))
        state = convert_state(raw, cfg_f)
        model = meta_model(cfg_f)
        check_state_dict(model, state, "official")
        model.load_state_dict(state, strict=True, assign=True)
        assert model.transformer.temporal_embed.shape[1] == frames


def test_release_variants_position_ids_metrics_vtm_score_and_task_heads(caplog):
    raw = official_state("base")
    raw["text_embeddings.position_ids"] = torch.empty(1, 40, dtype=torch.long, device="meta")  # transformers 4.2.1
    raw["train_itm_accuracy.correct"] = torch.empty((), device="meta")  # a Lightning metric, had it persisted
    raw["vqa_classifier.0.weight"] = torch.empty(1536, 768, device="meta")
    for p in ("weight", "bias"):  # B+ (CoTraining) names its ITM head vtm_score
        raw[f"vtm_score.fc.{p}"] = raw.pop(f"itm_score.fc.{p}")
    cfg = official_config(raw)
    assert cfg.vtm_head and cfg.arch == "allinone-base"
    with caplog.at_level(logging.WARNING, logger="egovlp.models.allinone"):
        state = convert_state(raw, cfg)
    assert "vqa_classifier.0.weight" in caplog.text
    check_state_dict(meta_model(cfg), state, "official")


def test_rank_output_is_folded_into_the_match_row(caplog):
    model = randomise_(create_model("allinone-test-vtc"))
    cfg = model.cfg
    raw = dict(model.state_dict())
    fc = model.itm_score.fc
    raw["rank_output.weight"], raw["rank_output.bias"] = fc.weight[1:].clone(), fc.bias[1:].clone()
    assert official_config(raw).embed_dim == 32
    state = convert_state(raw, cfg)
    assert "rank_output.weight" not in state and torch.equal(state["itm_score.fc.weight"], fc.weight)
    raw["rank_output.weight"] = raw["rank_output.weight"] + 1  # a file whose alias disagrees: the alias scored
    with caplog.at_level(logging.WARNING, logger="egovlp.models.allinone"):
        state = convert_state(raw, cfg)
    assert "rank_output differs" in caplog.text
    assert torch.equal(state["itm_score.fc.weight"][1], fc.weight[1] + 1)
    del raw["rank_output.bias"]
    with pytest.raises(CheckpointError, match="only one of rank_output"):
        convert_state(raw, cfg)


# ---------------------------------------------------------------------------- the Lightning file, end to end
class AttributeDict(dict):
    """Stand-in for ``pytorch_lightning.utilities.parsing.AttributeDict`` (a dict subclass)."""

    def __getattr__(self, key: str) -> object:
        return self[key]


class ReadOnlyDict(dict):
    """Stand-in for ``sacred.config.custom_containers.ReadOnlyDict``."""

    def __reduce__(self) -> tuple:
        return type(self), (dict(self),)


def save_lightning(state: dict[str, torch.Tensor], path: Path) -> None:
    """``state`` saved as PyTorch-Lightning 1.1.4 saves All-in-one: the stand-in classes live in throw-away modules
    named like the real ones, removed before the file is read (the converter must read them inert)."""
    names = {"pytorch_lightning.utilities.parsing": AttributeDict, "sacred.config.custom_containers": ReadOnlyDict}
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in ("pytorch_lightning", "sacred")}
    for module, cls in names.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules[".".join(parts[:i])] = types.ModuleType(".".join(parts[:i]))
        setattr(sys.modules[module], cls.__name__, cls)
        cls.__module__, cls.__qualname__ = module, cls.__name__
    try:
        hparams = AttributeDict()
        hparams["config"] = ReadOnlyDict(num_frames=3, max_text_len=40, loss_names=ReadOnlyDict(itm=1, mlm=1))
        ckpt = {
            "epoch": 9,
            "global_step": 200000,
            "pytorch-lightning_version": "1.1.4",
            "state_dict": state,
            "callbacks": {},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
            "lr_schedulers": [{"last_epoch": 200000}],
            "hyper_parameters": hparams,
        }
        torch.save(ckpt, path)
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in ("pytorch_lightning", "sacred")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_a_lightning_checkpoint_of_the_official_tiny_layout_converts(tmp_path, capsys):
    state = official_state("tiny", device="cpu")
    state["text_embeddings.position_ids"] = torch.arange(40)[None]  # transformers 4.2.1's persistent buffer
    save_lightning(state, tmp_path / "all-in-one-tiny.ckpt")
    out = tmp_path / "aio.safetensors"
    assert main(["convert", str(tmp_path / "all-in-one-tiny.ckpt"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    cfg = read_model_config(out)
    assert (cfg.family, cfg.arch, cfg.width, cfg.video.num_frames) == ("allinone", "allinone-tiny", 192, 3)
    loaded = load_model(out).eval()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    # the same tensors put into a freshly built model give the same scores
    reference = create_model("allinone-tiny").eval()
    reference.load_state_dict({k: v for k, v in state.items() if k != "text_embeddings.position_ids"})
    g = torch.Generator().manual_seed(0)
    video, ids = torch.randn(1, 3, 3, 224, 224, generator=g), torch.randint(1000, 2000, (1, 40), generator=g)
    mask = torch.ones(1, 40, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(loaded.vtm_score(video, ids, mask), reference.vtm_score(video, ids, mask))
    # --num-frames interpolates the 3 trained rows
    out8 = convert_official_checkpoint(tmp_path / "all-in-one-tiny.ckpt", tmp_path / "aio8.safetensors", 8)
    embed = load_model(out8).transformer.temporal_embed
    assert embed.shape == (1, 8, 192) and torch.equal(embed[0, 0], state["transformer.temporal_embed"][0, 0])


def test_a_misshaped_or_unknown_key_is_named_with_the_file(tmp_path):
    model = create_model("allinone-test")
    state = dict(model.state_dict())
    state["transformer.pos_embed"] = torch.zeros(1, 50, 64)
    state["itm_head_extra.weight"] = torch.zeros(2, 64)
    save_lightning(state, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as e:
        convert_official_checkpoint(tmp_path / "bad.ckpt", tmp_path / "o.safetensors", arch="allinone-test")
    msg = str(e.value)
    assert "bad.ckpt" in msg and "1 unexpected key(s): itm_head_extra.weight" in msg
    assert "transformer.pos_embed: checkpoint (1, 50, 64) vs model (1, 17, 64)" in msg

"""The "frozen" family (Frozen-in-Time, EgoVLP v1): configs, sizes, and conversion of the released layouts."""

import argparse
import ast
import dataclasses
import logging
import pathlib
import sys
import types
from pathlib import Path

import pytest
import torch

from egovlp.cli.main import main
from egovlp.errors import CheckpointError, ConfigError
from egovlp.models import EgoVLPv2, create_model, get_model_config
from egovlp.models.config import ModelConfig
from egovlp.models.convert import convert_official_checkpoint, detect_family, strip_prefix
from egovlp.models.distilbert import DistilBertModel
from egovlp.models.frozen import convert_state, official_config
from egovlp.models.registry import get_family
from egovlp.models.weights import check_state_dict, load_model, read_model_config

from .conftest import randomise_

REFERENCE = Path(__file__).resolve().parent / "data"
ARCH_OF_FRAMES = {4: "frozen-in-time", 16: "egovlp"}


def official_meta_state(frames: int) -> dict[str, torch.Tensor]:
    """Exactly the official keys, shapes and dtypes (families_state_dicts.txt) as meta tensors, DDP-prefixed."""
    state = {}
    for line in (REFERENCE / f"official_frozen_state_dict_{frames}frames.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        state["module." + key] = torch.empty(ast.literal_eval(shape), dtype=getattr(torch, dtype), device="meta")
    return state


# ----------------------------------------------------------------------------------------------- configs and sizes
def test_the_family_constants():
    for arch, frames in (("frozen-in-time", 4), ("egovlp", 16)):
        cfg = get_model_config(arch)
        assert cfg.family == "frozen" and cfg.arch == arch and cfg.video.num_frames == frames
        assert (cfg.num_fusion_layers, cfg.projector, cfg.embed_dim, cfg.video.ln_eps) == (0, "small", 256, 1e-6)
        assert (cfg.text.kind, cfg.text.tokenizer, cfg.text.vocab_size, cfg.text.depth) == (
            "distilbert", "wordpiece", 30522, 6)  # fmt: skip
        assert (cfg.text.ln_eps, cfg.text.pad_token_id, cfg.text.max_positions) == (1e-12, 0, 512)
    with torch.device("meta"):
        model = create_model("frozen-in-time")
    assert isinstance(model.text_model, DistilBertModel)
    assert model.video_model.norm.eps == 1e-6 and model.video_model.blocks[0].norm3.eps == 1e-6
    assert not hasattr(model, "itm_score") and not hasattr(model, "mlm_score") and not hasattr(model, "cls_token")


def test_parameter_counts_of_the_release(capsys):
    """families.md §1a: video 114.17 M, DistilBERT 66.36 M, projections 0.39 M (hand: 2 x (768*256 + 256))."""
    table = get_family("frozen").parameter_table(get_model_config("frozen-in-time"))
    assert table == {
        "video tower": 114_168_576,
        "text tower": 66_362_880,  # 23,835,648 embeddings + 6 x 7,087,872 layers
        "projectors": 393_728,
        "total": 180_925_184,
    }
    egovlp = get_family("frozen").parameter_table(get_model_config("egovlp"))
    assert egovlp["video tower"] - table["video tower"] == 12 * 768  # 12 more temporal rows
    assert main(["info", "frozen-in-time"]) == 0
    out = capsys.readouterr().out
    assert "114.17" in out and "66.36" in out and "0.39" in out and "fused" not in out


def test_frozen_configs_refuse_fusion():
    with pytest.raises(ConfigError, match="num_fusion_layers must be 0 for the frozen family.*got 2"):
        dataclasses.replace(get_model_config("frozen-in-time-tiny"), num_fusion_layers=2)
    model = create_model("frozen-in-time-tiny")
    with pytest.raises(RuntimeError, match="no fusion layers"):
        model.fuse(torch.zeros(1, 4, 3, 32, 32), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3))


# ------------------------------------------------------------------------------- official layouts (full size)
@pytest.mark.parametrize("frames", [4, 16])
def test_every_official_key_maps_onto_ours_strictly(frames):
    raw = strip_prefix(official_meta_state(frames))
    assert len(raw) == 327
    assert detect_family(raw, "official").name == "frozen"
    cfg = official_config(raw)
    assert cfg == get_model_config(ARCH_OF_FRAMES[frames])  # every constant read back off the shapes
    for target in (frames, 4):  # as released, and EgoVLP's 16 rows sliced to the 4 it was trained with
        cfg_t = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_frames=target))
        state = convert_state(raw, cfg_t)
        with torch.device("meta"):
            model = EgoVLPv2(cfg_t)
        check_state_dict(model, state, "official")
        model.load_state_dict(state, strict=True, assign=True)
        assert model.video_model.temporal_embed.shape == (1, target, 768)


def test_a_newer_transformers_position_ids_buffer_is_dropped():
    raw = strip_prefix(official_meta_state(4))
    raw["text_model.embeddings.position_ids"] = torch.empty(1, 512, dtype=torch.long, device="meta")
    assert "text_model.embeddings.position_ids" not in convert_state(raw, official_config(raw))


# -------------------------------------------------------------------- the release's file format, end to end
def _release_config_object():
    """A pickled config like EgoVLP's: a ``parse_config.ConfigParser`` holding an argparse.Namespace and paths.

    The stand-in classes live in a throw-away module named like the release's, removed before the file is read,
    so the converter cannot import them: it must read them as inert records.
    """
    mod = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self):
            self.args = argparse.Namespace(config="configs/pt/egoclip.json", learning_rate1=2e-4, schedule=[60, 80])
            self._config = {"arch": {"type": "FrozenInTime", "args": {"video_params": {"num_frames": 16}}}}
            self.resume = pathlib.Path("pretrained/egovlp.pth")
            self.cfg_fname = pathlib.Path("configs/pt/egoclip.json")
            self._save_dir = pathlib.Path("/results/EgoClip_4f/models/0101")
            self._log_dir = pathlib.Path("/results/EgoClip_4f/log/0101")
            self.log_levels = {0: 30, 1: 20, 2: 10}

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    mod.ConfigParser = ConfigParser
    return mod, ConfigParser


def save_release_checkpoint(model: torch.nn.Module, path: Path, state: dict | None = None) -> None:
    """``model`` saved the way the Frozen / EgoVLP trainers save: ``module.`` keys, optimizer, ConfigParser."""
    state = state if state is not None else {"module." + k: v for k, v in model.state_dict().items()}
    mod, parser = _release_config_object()
    sys.modules["parse_config"] = mod
    try:
        obj = {
            "arch": "FrozenInTime",
            "epoch": 10,
            "state_dict": state,
            "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 3e-5, "params": [0]}]},
            "monitor_best": 0.907,
            "config": parser(),
        }
        torch.save(obj, path)
    finally:
        del sys.modules["parse_config"]


def released_egovlp_tiny() -> EgoVLPv2:
    """A random egovlp-tiny as released: 16 temporal rows of which only the first 4 were ever trained."""
    model = create_model("egovlp-tiny")
    assert isinstance(model, EgoVLPv2)
    randomise_(model).eval()
    with torch.no_grad():
        model.video_model.temporal_embed[:, 4:] = 0
    return model


@pytest.fixture
def dual_batch():
    g = torch.Generator().manual_seed(5)
    video = torch.randn(2, 4, 3, 32, 32, generator=g)
    ids = torch.randint(1000, (2, 7), generator=g)
    ids[:, 0] = 101 % 1000
    mask = torch.ones(2, 7, dtype=torch.long)
    ids[1, 4:], mask[1, 4:] = 0, 0
    return video, ids, mask


def test_egovlp_release_converts_and_the_16_to_4_slice_keeps_the_trained_rows(tmp_path, dual_batch, capsys):
    original = released_egovlp_tiny()
    save_release_checkpoint(original, tmp_path / "egovlp.pth")
    out = tmp_path / "egovlp4.safetensors"
    argv = ["convert", str(tmp_path / "egovlp.pth"), "--out", str(out), "--num-frames", "4", "--arch", "egovlp-tiny"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    cfg = read_model_config(out)
    assert (cfg.family, cfg.arch, cfg.video.num_frames) == ("frozen", "egovlp-tiny", 4)
    loaded = load_model(out).eval()
    trained = original.video_model.temporal_embed[:, :4]
    assert torch.equal(loaded.video_model.temporal_embed, trained)  # sliced: interpolating 16 -> 4 would differ
    video, ids, mask = dual_batch
    with torch.no_grad():
        v, t = loaded(video, ids, mask)
        torch.testing.assert_close(v, original.encode_video(video))
        torch.testing.assert_close(t, original.encode_text(ids, mask))
    assert v.shape == t.shape == (2, 32)


def test_egovlp_kept_at_16_rows_warns_about_the_untrained_ones(tmp_path, dual_batch, caplog):
    original = released_egovlp_tiny()
    save_release_checkpoint(original, tmp_path / "egovlp.pth")
    with caplog.at_level(logging.WARNING, logger="egovlp.models.frozen"):
        out = convert_official_checkpoint(tmp_path / "egovlp.pth", tmp_path / "e16.safetensors", arch="egovlp-tiny")
    assert "rows 4..15 of the checkpoint's temporal embedding are all zero" in caplog.text
    assert "--num-frames 4" in caplog.text
    loaded = load_model(out, num_frames=4).eval()  # truncated on load: the same first 4 rows
    assert loaded.cfg.video.num_frames == 4
    video = dual_batch[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(video), original.encode_video(video))


def test_frozen_release_converts_with_its_family_detected(tmp_path, dual_batch, caplog):
    original = randomise_(create_model("frozen-in-time-tiny")).eval()
    save_release_checkpoint(original, tmp_path / "frozen.pth")
    with caplog.at_level(logging.WARNING, logger="egovlp.models.frozen"):
        out = convert_official_checkpoint(tmp_path / "frozen.pth", tmp_path / "f.safetensors", arch=None)
    assert not caplog.text  # all 4 rows trained: nothing to warn about
    cfg = read_model_config(out)
    # inferred from the shapes: everything but the head counts, which no shape records (64 // 64 = 1 head)
    tiny = get_model_config("frozen-in-time-tiny")
    assert isinstance(cfg, ModelConfig) and cfg.family == "frozen" and cfg.arch == "frozen-in-time"
    assert dataclasses.replace(cfg.video, num_heads=4) == tiny.video
    assert dataclasses.replace(cfg.text, num_heads=4, dropout=tiny.text.dropout) == tiny.text
    # with the architecture named, the features are the original's
    out = convert_official_checkpoint(tmp_path / "frozen.pth", tmp_path / "f2.safetensors", arch="frozen-in-time-tiny")
    loaded = load_model(out).eval()
    video, ids, mask = dual_batch
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(video), original.encode_video(video))
        torch.testing.assert_close(loaded.encode_text(ids, mask), original.encode_text(ids, mask))
    with pytest.raises(CheckpointError, match="--arch egovlpv2-tiny is a egovlpv2 model but the file holds a frozen"):
        convert_official_checkpoint(tmp_path / "frozen.pth", tmp_path / "x.safetensors", arch="egovlpv2-tiny")


def test_unknown_missing_and_misshaped_keys_are_named(tmp_path):
    model = create_model("frozen-in-time-tiny")
    state = {"module." + k: v for k, v in model.state_dict().items()}
    del state["module.text_model.transformer.layer.1.ffn.lin2.bias"]
    state["module.txt_proj_2.1.weight"] = torch.zeros(32, 512)  # an OA-Trans training-only extra
    state["module.video_model.pos_embed"] = torch.zeros(1, 50, 64)  # 7x7 patches instead of 4x4
    save_release_checkpoint(model, tmp_path / "bad.pth", state)
    with pytest.raises(CheckpointError) as e:
        convert_official_checkpoint(tmp_path / "bad.pth", tmp_path / "o.safetensors", arch="frozen-in-time-tiny")
    msg = str(e.value)
    assert "bad.pth" in msg and "1 missing key(s): text_model.transformer.layer.1.ffn.lin2.bias" in msg
    assert "1 unexpected key(s): txt_proj_2.1.weight" in msg
    assert "video_model.pos_embed: checkpoint (1, 50, 64) vs model (1, 17, 64)" in msg

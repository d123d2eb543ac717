import ast
import sys
import types
from pathlib import Path

import pytest
import torch

from egovlp.errors import CheckpointError
from egovlp.models import EgoVLPv2, create_model, get_model_config
from egovlp.models.convert import convert_official_checkpoint, convert_official_state_dict, infer_official_config
from egovlp.models.weights import check_state_dict, load_model

from .conftest import randomise_

# The official checkpoints' key names, shapes and dtypes (REFERENCE.md's lists, vendored so a clone tests them).
REFERENCE = Path(__file__).resolve().parent / "data"
TSV = {"egovlpv2-base": "4096proj", "egovlpv2-base-smallproj": "256proj"}


def official_meta_state(variant: str) -> dict[str, torch.Tensor]:
    """A state dict with exactly the official keys, shapes and dtypes (meta tensors, no memory), DDP-prefixed."""
    path = REFERENCE / f"official_egovlpv2_state_dict_{variant}_4frames.tsv"
    state = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        state["module." + key] = torch.empty(ast.literal_eval(shape), dtype=getattr(torch, dtype), device="meta")
    return state


@pytest.mark.parametrize("arch", list(TSV))
def test_every_official_key_maps_onto_ours_strictly(arch):
    raw = official_meta_state(TSV[arch])
    state = convert_official_state_dict(raw, num_frames=16)
    cfg = infer_official_config({k.removeprefix("module."): v for k, v in raw.items()})
    assert cfg.projector == get_model_config(arch).projector and cfg.embed_dim == get_model_config(arch).embed_dim
    assert cfg.num_fusion_layers == 6 and cfg.video.num_frames == 4
    cfg = get_model_config(arch)
    with torch.device("meta"):
        model = EgoVLPv2(cfg)
        model.resize_temporal_embed(16)
    check_state_dict(model, state, "official")
    model.load_state_dict(state, strict=True, assign=True)
    assert state["video_model.temporal_embed"].shape == (1, 16, 768)


def _official_state(model: EgoVLPv2) -> dict[str, torch.Tensor]:
    """``model``'s weights under the release's names: DDP prefix and the position_ids buffer."""
    state = {"module." + k: v for k, v in model.state_dict().items()}
    state["module.text_model.embeddings.position_ids"] = torch.arange(model.cfg.text.max_positions).expand(1, -1)
    return state


def _official_checkpoint(model: EgoVLPv2, path: Path, config_obj=None) -> None:
    """Save ``model`` the way the release does: DDP prefix, position_ids buffer, trainer state, a foreign config."""
    state = _official_state(model)
    # the release pickles a ConfigParser from its own code base: mimic a class we cannot import
    mod = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self):
            self.config = {"arch": {"type": "FrozenInTime"}, "optimizer": {"args": {"lr": 3e-5}}}
            self.run_id = "0101_120000"

    ConfigParser.__module__ = "parse_config"
    ConfigParser.__qualname__ = "ConfigParser"
    mod.ConfigParser = ConfigParser
    sys.modules["parse_config"] = mod
    try:
        obj = {
            "arch": "FrozenInTime",
            "epoch": 10,
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 3e-5, "params": [0, 1]}]},
            "scheduler": None,
            "monitor_best": 0.5,
            "config": config_obj if config_obj is not None else ConfigParser(),
        }
        torch.save(obj, path)
    finally:
        del sys.modules["parse_config"]


def test_convert_tiny_official_checkpoint_round_trip(tmp_path, batch):
    original = randomise_(create_model("egovlpv2-tiny")).eval()
    _official_checkpoint(original, tmp_path / "official.pth")
    out = convert_official_checkpoint(tmp_path / "official.pth", tmp_path / "ours.safetensors", arch="egovlpv2-tiny")
    assert out.is_file() and out.with_suffix(".yaml").is_file()
    loaded = load_model(out).eval()
    video, ids, mask = batch
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(video), original.encode_video(video))
        torch.testing.assert_close(loaded.encode_text(ids, mask), original.encode_text(ids, mask))
        f1, f2 = loaded.fuse(video, ids, mask), original.fuse(video, ids, mask)
        torch.testing.assert_close(loaded.vtm_logits(f1), original.vtm_logits(f2))
    # a different frame count: the temporal embedding is interpolated
    out8 = convert_official_checkpoint(tmp_path / "official.pth", tmp_path / "ours8.safetensors", 8, "egovlpv2-tiny")
    model8 = load_model(out8)
    assert model8.cfg.video.num_frames == 8
    torch.testing.assert_close(model8.video_model.temporal_embed[0, 0], original.video_model.temporal_embed[0, 0])
    torch.testing.assert_close(model8.video_model.temporal_embed[0, -1], original.video_model.temporal_embed[0, -1])


def test_convert_reports_missing_unexpected_and_shape_mismatch(tmp_path):
    bad = _official_state(randomise_(create_model("egovlpv2-tiny")))
    del bad["module.itm_score.fc.bias"]
    bad["module.video_model.extra.weight"] = torch.zeros(3)
    bad["module.vid_proj.0.weight"] = torch.zeros(10, 64)
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        convert_official_checkpoint(tmp_path / "bad.pth", tmp_path / "out.safetensors", arch="egovlpv2-tiny")
    msg = str(err.value)
    assert "bad.pth" in msg and "itm_score.fc.bias" in msg and "video_model.extra.weight" in msg
    assert "vid_proj.0.weight: checkpoint (10, 64) vs model (64, 64)" in msg


def test_convert_never_runs_pickle_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    _official_checkpoint(randomise_(create_model("egovlpv2-tiny")), tmp_path / "evil.pth", config_obj=Payload())
    with pytest.raises(CheckpointError, match="system"):
        convert_official_checkpoint(tmp_path / "evil.pth", tmp_path / "out.safetensors", arch="egovlpv2-tiny")
    assert not marker.exists()

"""Model families: dispatch by the family a config records, weight-file errors, format detection in convert."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from egovlp.cli.main import main
from egovlp.config import to_yaml
from egovlp.errors import CheckpointError
from egovlp.models.convert import convert_official_checkpoint
from egovlp.models.registry import (
    _FAMILIES,
    ModelFamily,
    create_model,
    get_model_config,
    list_families,
    register_family,
)
from egovlp.models.weights import CONFIG_KEY, load_model, read_model_config, save_weights


@dataclass(frozen=True)
class ToyConfig:
    family: str = "toy"
    arch: str = "toy"
    width: int = 3


class Toy(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.width, 2)


@pytest.fixture
def toy_family():
    family = register_family(
        ModelFamily(
            name="toy",
            description="a test family",
            config_type=ToyConfig,
            build=Toy,
            parameter_table=lambda cfg: {"total": sum(p.numel() for p in Toy(cfg).parameters())},
            mac_table=lambda cfg, frames, tokens: {"forward": 2 * cfg.width / 1e9},
            recognises=lambda state: set(state) == {"proj.weight", "proj.bias"},
            official_config=lambda state: ToyConfig(width=state["proj.weight"].shape[1]),
            convert_state=lambda state, cfg: dict(state),
        )
    )
    yield family
    _FAMILIES.pop("toy")


def test_weight_files_record_their_family_and_load_through_it(toy_family, tmp_path, capsys):
    model = create_model(ToyConfig(width=5))
    assert isinstance(model, Toy) and "toy" in list_families()
    path = save_weights(model, tmp_path / "toy.safetensors")
    assert read_model_config(path) == ToyConfig(width=5)
    loaded = load_model(path)
    assert isinstance(loaded, Toy) and torch.equal(loaded.proj.weight, model.proj.weight)
    assert main(["info", str(path), "--json"]) == 0
    assert '"family": "toy"' in capsys.readouterr().out


def test_convert_detects_the_family_of_an_official_checkpoint(toy_family, tmp_path):
    state = {"module.proj.weight": torch.randn(2, 7), "module.proj.bias": torch.zeros(2)}
    torch.save({"arch": "Toy", "epoch": 3, "state_dict": state}, tmp_path / "toy.pth")
    out = convert_official_checkpoint(tmp_path / "toy.pth", tmp_path / "toy.safetensors")
    assert isinstance(load_model(out), Toy) and read_model_config(out).width == 7


def test_egovlpv2_files_without_a_family_key_still_load(tmp_path):
    """Weight files written before families existed carry no ``family``: they are EgoVLPv2's."""
    model = create_model("egovlpv2-tiny")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    text = to_yaml(model.cfg).replace("family: egovlpv2\n", "")
    assert "family" not in text
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={CONFIG_KEY: text})
    assert load_model(tmp_path / "old.safetensors").cfg.arch == "egovlpv2-tiny"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"not a readable safetensors file \(0 bytes"),
        (b"\x13\x07garbage bytes that are no header", "not a readable safetensors file"),
        (None, "not a readable safetensors file"),  # truncated: the first half of a real file
    ],
)
def test_unreadable_weight_files_name_the_path(tmp_path, content, message):
    path = tmp_path / "w.safetensors"
    if content is None:
        real = save_weights(create_model("egovlpv2-tiny"), tmp_path / "real.safetensors").read_bytes()
        content = real[: len(real) // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(path)
    assert str(path) in str(e.value)


def test_a_release_pickle_or_a_folder_is_explained(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "EgoVLPv2.pth")
    with pytest.raises(CheckpointError, match="PyTorch pickle .*egovlp convert"):
        load_model(tmp_path / "EgoVLPv2.pth")
    with pytest.raises(CheckpointError, match="folder without model.safetensors"):
        load_model(tmp_path)
    save_weights(create_model("egovlpv2-tiny"), tmp_path / "model.safetensors")
    assert load_model(tmp_path).cfg.arch == "egovlpv2-tiny"  # a run folder stands for its model.safetensors


def test_a_small_file_claiming_a_huge_model_fails_before_building_it(tmp_path):
    small = create_model("egovlpv2-tiny")
    huge = dataclasses.replace(get_model_config("egovlpv2-base"), text=dataclasses.replace(
        get_model_config("egovlpv2-base").text, depth=48))  # fmt: skip
    tensors = {k: v.contiguous() for k, v in small.state_dict().items()}
    save_file(tensors, str(tmp_path / "liar.safetensors"), metadata={CONFIG_KEY: to_yaml(huge)})
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(tmp_path / "liar.safetensors")
    assert time.perf_counter() - start < 20  # built on the meta device only (the real model would be ~1 B params)


def test_convert_names_an_unknown_format_or_family(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict at the top level of the checkpoint, got list"):
        convert_official_checkpoint(tmp_path / "list.pth", tmp_path / "o.safetensors")
    torch.save({"weights": {"a": 1}, "step": 4}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"its state dict holds a non-tensor under 'weights'"):
        convert_official_checkpoint(tmp_path / "odd.pth", tmp_path / "o.safetensors")
    torch.save({"state_dict": {"encoder.w": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"keys \(encoder.w, ... 1 in all\) match no model family"):
        convert_official_checkpoint(tmp_path / "other.pth", tmp_path / "o.safetensors")

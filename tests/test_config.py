from dataclasses import dataclass, field

import pytest

from egovlp.config import load_config, to_yaml
from egovlp.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 3e-5
    weight_decay: float = 0.01


@dataclass(frozen=True)
class Experiment:
    name: str = "run"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)
    data_root: str | None = None


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: demo\noptim:\n  lr: 0.001\n")
    cfg = load_config(Experiment, path, ["steps=5", "optim.weight_decay=0.1", "data_root=/data"])
    assert cfg == Experiment("demo", 5, Optim(1e-3, 0.1), "/data")
    assert isinstance(cfg, Experiment)


def test_unknown_key_names_key_source_and_close_match(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'optim.lrr' \(from the command line\); did you mean 'optim.lr'"
    ):
        load_config(Experiment, overrides=["optim.lrr=1"])
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  weight_decy: 0.1\n")
    with pytest.raises(ConfigError, match=rf"'optim.weight_decy' \(from {path}\); did you mean 'optim.weight_decay'"):
        load_config(Experiment, path)
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):  # right leaf, wrong section
        load_config(Experiment, overrides=["lr=1"])


def test_bad_values_and_syntax():
    with pytest.raises(ConfigError, match="invalid value for config key 'steps'"):
        load_config(Experiment, overrides=["steps=many"])
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        load_config(Experiment, overrides=["steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Experiment, "/nonexistent.yaml")


def test_yaml_round_trip(tmp_path):
    cfg = load_config(Experiment, overrides=["optim.lr=0.5"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(Experiment, path) == cfg


def test_model_arch_may_name_a_weight_file(tmp_path):
    """``model.arch=<weights>.safetensors`` starts the model config from the file's (overrides still apply)."""
    import dataclasses

    from egovlp.cli.common import load_experiment_config
    from egovlp.errors import CheckpointError
    from egovlp.models import create_model
    from egovlp.models.weights import save_weights
    from egovlp.tasks.pretrain import PretrainConfig

    model = create_model("egovlpv2-tiny-smallproj")
    model.cfg = dataclasses.replace(model.cfg, video=dataclasses.replace(model.cfg.video, temporal_init_std=0.5))
    path = save_weights(model, tmp_path / "mine.safetensors")
    cfg = load_experiment_config(PretrainConfig, None, [f"model.arch={path}", "model.text.dropout=0.0"])
    assert cfg.model.projector == "small" and cfg.model.video.temporal_init_std == 0.5
    assert cfg.model.text.dropout == 0.0 and cfg.model.arch == str(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_experiment_config(PretrainConfig, None, [f"model.arch={tmp_path / 'none.safetensors'}"])

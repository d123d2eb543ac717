"""Bad configs and inputs found by trying egovlp as a new user (issue 16): each is one line naming the key or file,
reported at start, never a traceback or a silent pass."""

from __future__ import annotations

import pytest
import torch

from egovlp.cli.common import load_experiment_config
from egovlp.cli.main import main
from egovlp.errors import ConfigError, DataError
from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.models.weights import save_weights
from egovlp.tasks.epic_mir import EpicMIRConfig
from egovlp.tasks.pretrain import PretrainConfig
from egovlp.tasks.shared import encode_videos
from helpers import tiny_pretrain_overrides


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "config key 'data.batch_size' must be >= 1, got 0"),
        ("data.batch_size=-4", "config key 'data.batch_size' must be >= 1, got -4"),
        ("data.num_frames=0", "config key 'data.num_frames' must be >= 1, got 0"),
        ("data.num_workers=-1", "config key 'data.num_workers' must be >= 0, got -1"),
        ("data.crop_scale=[2.0,0.1]", "config key 'data.crop_scale' must be [low, high] with 0 < low <= high <= 1"),
        ("loss.positives=bogus", "config key 'loss.positives' must be one of verb_and_noun, verb, noun, none"),
        ("loss.temperature=0", "config key 'loss.temperature' must be > 0, got 0.0"),
        ("optim.lr=-1", "config key 'optim.lr' must be > 0"),
        ("train.precision=fp64", "config key 'train.precision' must be one of"),
        ("train.accum_steps=0", "config key 'train.accum_steps' must be >= 1, got 0"),
        ("train.log_every=0", "config key 'train.log_every' must be >= 1, got 0"),
        ("train.max_steps=-5", "config key 'train.max_steps' must be >= 0, got -5"),
    ],
)
def test_bad_values_are_refused_at_load_naming_key_and_rule(override, message, tmp_path, capsys):
    assert main(["pretrain", "--config", "pretrain/demo", f"train.output_dir={tmp_path}", override]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_an_empty_value_on_the_command_line_is_an_empty_string():
    cfg = load_experiment_config(PretrainConfig, "pretrain/demo", ["init.roberta="])
    assert cfg.init.roberta == ""


def test_the_frame_count_is_one_setting():
    """data.num_frames is the run's frame count; a model.video.num_frames that disagrees is refused at load."""
    with pytest.raises(ConfigError, match=r"model.video.num_frames=8 disagrees with data.num_frames=4"):
        load_experiment_config(PretrainConfig, "pretrain/demo", ["model.video.num_frames=8"])
    with pytest.raises(ConfigError, match=r"model.video.num_frames=4 disagrees with data.num_frames=16"):
        load_experiment_config(EpicMIRConfig, None, ["model.video.num_frames=4"])
    assert load_experiment_config(PretrainConfig, "pretrain/demo", ["model.video.num_frames=4"]).data.num_frames == 4


def test_finetuning_takes_the_architecture_of_its_checkpoint(tmp_path):
    """No model.arch: a fine-tuning config with init.checkpoint starts from that checkpoint's architecture."""
    torch.manual_seed(0)
    weights = save_weights(EgoVLPv2(get_model_config("egovlpv2-tiny-smallproj")), tmp_path / "tiny.safetensors")
    cfg = load_experiment_config(EpicMIRConfig, "finetune/epic_mir", [f"init.checkpoint={weights}"], "finetune")
    assert cfg.model.arch == "egovlpv2-tiny-smallproj" and cfg.model.video.width == 64
    assert cfg.model.grad_checkpointing  # the preset's settings still apply on top
    explicit = load_experiment_config(EpicMIRConfig, None, [f"init.checkpoint={weights}", "model.arch=egovlpv2-base"])
    assert explicit.model.arch == "egovlpv2-base"  # an explicit model.arch wins


def test_an_egoclip_csv_with_only_a_header_is_an_error(small_world, tmp_path, capsys):
    header = small_world["egoclip"].read_text().splitlines()[0]
    (tmp_path / "empty.csv").write_text(header + "\n")
    args = tiny_pretrain_overrides(small_world, tmp_path / "run", **{"data.metadata": tmp_path / "empty.csv"})
    assert main(["pretrain", "--config", "pretrain/demo", *args]) == 1
    assert "empty.csv: no clip rows to train on (a header only)" in capsys.readouterr().err


def test_nan_features_name_the_items_instead_of_failing_in_a_metric():
    class NaNModel(torch.nn.Module):
        def encode_video(self, video, normalize=False):
            return torch.full((video.shape[0], 4), float("nan"))

    batch = {"video": torch.zeros(2, 1, 3, 4, 4), "index": torch.tensor([5, 6]), "num_skipped": 0}
    with pytest.raises(DataError, match=r"video features of items \[5, 6\]: 8 of 8 values are NaN or infinite"):
        encode_videos(NaNModel(), [batch], torch.device("cpu"))


def test_a_run_that_failed_at_start_leaves_its_folder_free(small_world, tmp_path, capsys):
    """A typo fails the run before any checkpoint; the corrected command then runs in the same folder."""
    out = tmp_path / "run"
    bad = tiny_pretrain_overrides(small_world, out, **{"data.metadata": tmp_path / "nope.csv", "train.max_steps": 2})
    assert main(["pretrain", "--config", "pretrain/demo", *bad]) == 1
    assert "nope.csv" in capsys.readouterr().err
    good = tiny_pretrain_overrides(small_world, out, **{"train.max_steps": 2, "egomcq.metadata": ""})
    assert main(["pretrain", "--config", "pretrain/demo", *good]) == 0
    assert (out / "model.safetensors").is_file()


def test_a_failing_evaluation_does_not_lose_the_trained_steps(small_world, tmp_path, capsys, monkeypatch):
    from egovlp.tasks.mcq import EgoMCQEvaluator

    def broken(self, model):
        raise DataError("a clip of the validation set cannot be read")

    monkeypatch.setattr(EgoMCQEvaluator, "__call__", broken)
    out = tmp_path / "run"
    args = tiny_pretrain_overrides(small_world, out, **{"train.max_steps": 2})
    assert main(["pretrain", "--config", "pretrain/demo", *args]) == 1
    assert "cannot be read" in capsys.readouterr().err
    assert (out / "checkpoints" / "step_00000002" / "model.safetensors").is_file()  # saved before evaluating


def test_a_bad_validation_path_fails_before_training(small_world, tmp_path, capsys):
    args = tiny_pretrain_overrides(small_world, tmp_path / "run", **{"egomcq.metadata": tmp_path / "nope.json"})
    assert main(["pretrain", "--config", "pretrain/demo", *args]) == 1
    assert "nope.json: no such EgoMCQ file" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

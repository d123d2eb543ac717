"""What the command line says when something is wrong, and what TASK --help says (found trying egovlp as a new
user would)."""

from __future__ import annotations

import pytest
import torch

from egovlp.cli.main import main, one_line
from egovlp.errors import VideoReadError


def test_an_error_from_a_dataloader_worker_is_reported_by_its_own_message():
    """torch re-raises a worker's error with the worker's traceback inside the message: keep its last line only."""

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise VideoReadError("clips/v.mp4: cannot decode 1.0-2.0 s [row egoclip.csv:7]")

    loader = torch.utils.data.DataLoader(Broken(), num_workers=1)
    with pytest.raises(VideoReadError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # what torch makes of it
    assert one_line(caught.value) == "clips/v.mp4: cannot decode 1.0-2.0 s [row egoclip.csv:7]"
    assert one_line(ValueError("plain")) == "plain"


def test_a_release_pickle_where_a_model_config_is_read_is_explained(tmp_path, capsys):
    torch.save({"state_dict": {}}, tmp_path / "EgoVLPv2.pth")
    assert main(["info", str(tmp_path / "EgoVLPv2.pth")]) == 1
    err = capsys.readouterr().err
    assert "is a PyTorch pickle" in err and "egovlp convert" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv", [["info", "egovlpv2-tiny", "--frames", "-3"], ["info", "egovlpv2-tiny", "--text-tokens", "0"]]
)
def test_info_refuses_impossible_sizes(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "must be >=" in capsys.readouterr().err


def test_task_help_names_the_required_keys_and_the_preset(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "epic_mir", "--help"])
    out = capsys.readouterr().out
    assert "EPIC-Kitchens-100 multi-instance retrieval" in out
    assert "required keys: data.annotation_dir=... data.video_root=... data.tokenizer=..." in out
    assert "--config eval/epic_mir" in out and "--checkpoint CHECKPOINT" in out and "egovlp .safetensors" in out

"""``egovlp pretrain`` of the frozen family: the family's own loss (NormSoftmax for Frozen-in-Time, EgoNCE for EgoVLP)
picked by ``loss.objective=auto``, checked against naive references, and a short run on the synthetic world."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.text import clean_narration
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import ConfigError
from egovlp.losses import egonce_loss
from egovlp.models import create_model, get_model_config
from egovlp.models.weights import read_model_config
from egovlp.tasks.objectives import DualContrastModule, default_objective, get_objective, resolve_objective
from egovlp.tasks.pretrain import PretrainConfig
from helpers import tiny_pretrain_overrides

DEMO = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "pretrain" / "demo.yaml"


def test_auto_picks_the_family_loss():
    assert default_objective(get_model_config("egovlpv2-tiny")) == "egovlpv2"
    assert default_objective(get_model_config("frozen-in-time-tiny")) == "normsoftmax"
    assert default_objective(get_model_config("frozen-in-time")) == "normsoftmax"
    assert default_objective(get_model_config("egovlp-tiny")) == "egonce"
    assert resolve_objective("normsoftmax", get_model_config("egovlp-tiny")).name == "normsoftmax"  # named wins
    with pytest.raises(ConfigError, match="loss.objective='egonse' is not an objective .*did you mean egonce"):
        get_objective("egonse")


def _batch(n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (n, 7), generator=g)
    mask = torch.ones(n, 7, dtype=torch.long)
    mask[1, 4:] = 0
    verb = torch.zeros(n, 3)
    noun = torch.zeros(n, 3)
    verb[torch.arange(n), torch.arange(n) % 3] = 1  # items 0 and 3 share verb 0 and noun 0, ...
    noun[torch.arange(n), torch.arange(n) % 3] = 1
    return {"video": torch.randn(n, 4, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask,
            "verb": verb, "noun": noun}  # fmt: skip


def test_normsoftmax_is_the_sum_of_both_directions_by_a_loop():
    """families.md §1c: L = -(1/N) sum_i log softmax_j(S_ij / tau)[i] - (1/N) sum_j log softmax_i(S_ij / tau)[j]."""
    model = create_model("frozen-in-time-tiny").eval()
    cfg = PretrainConfig(model=model.cfg)
    module = get_objective("normsoftmax").build_module(model, cfg, None, 0, None)
    batch = _batch()
    with torch.no_grad():
        out = module(batch)
        t = model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True).double()
        v = model.encode_video(batch["video"], normalize=True).double()
    n, tau = t.shape[0], 0.05
    t2v = v2t = 0.0
    for i in range(n):
        row = torch.tensor([float(t[i] @ v[j]) / tau for j in range(n)])
        col = torch.tensor([float(t[j] @ v[i]) / tau for j in range(n)])
        t2v -= float(row[i] - torch.logsumexp(row, 0)) / n
        v2t -= float(col[i] - torch.logsumexp(col, 0)) / n
    assert set(out) == {"loss", "nce"}
    assert float(out["loss"]) == pytest.approx(t2v + v2t, rel=1e-5)


def test_egovlp_objective_is_egonce_with_verb_and_noun_positives():
    model = create_model("egovlp-tiny").eval()
    cfg = PretrainConfig(model=model.cfg)
    module = resolve_objective("auto", model.cfg).build_module(model, cfg, None, 0, None)
    assert isinstance(module, DualContrastModule) and module.nce.positives == "verb_and_noun"
    batch = _batch()
    with torch.no_grad():
        out = module(batch)
        t = model.encode_text(batch["input_ids"], batch["attention_mask"])
        v = model.encode_video(batch["video"])
        plain = egonce_loss(t, v, positives="none").loss
    expected = egonce_loss(t, v, batch["verb"], batch["noun"], positives="verb_and_noun").loss
    torch.testing.assert_close(out["egonce"], expected)
    assert float(out["loss"]) != pytest.approx(float(plain))  # the shared-tag positives change the loss


def test_objectives_refuse_models_they_cannot_train():
    cfg = PretrainConfig(model=get_model_config("frozen-in-time-tiny"))
    with pytest.raises(ConfigError, match="loss.objective=egovlpv2 needs an EgoVLPv2-class model"):
        get_objective("egovlpv2").build_module(torch.nn.Linear(1, 1), cfg, None, 0, None)
    with pytest.raises(ConfigError, match="loss.objective='normsoftmax' needs a dual encoder"):
        get_objective("normsoftmax").build_module(torch.nn.Linear(1, 1), cfg, None, 0, None)


@pytest.fixture(scope="module")
def wordpiece(small_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wordpiece")
    table = load_egoclip(small_world["egoclip"])
    Tokenizer.train([clean_narration(table.text(i)) for i in range(len(table))], 200, out, 1, kind="wordpiece")
    return out


def frozen_overrides(world, out: Path, tokenizer: Path, arch: str = "frozen-in-time-tiny", **extra) -> list[str]:
    """The demo preset pointed at a tiny frozen-family model and a WordPiece tokenizer."""
    size = Tokenizer.from_dir(tokenizer).vocab_size
    values = {"model.arch": arch, "model.text.vocab_size": size, "model.text.pad_token_id": 0,
              "model.fusion_gate_init": 0.0, "optim.freeze": "[]", "data.tokenizer": tokenizer,
              "data.scene_negatives": False, **extra}  # fmt: skip
    return tiny_pretrain_overrides(world, out, **values)


def test_pretrain_cli_trains_frozen_in_time_with_normsoftmax(small_world, wordpiece, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(DEMO), *frozen_overrides(small_world, out, wordpiece,
            **{"train.max_steps": 3, "train.eval_every": 3})]  # fmt: skip
    assert main(argv) == 0
    assert "finished at step 3" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(set(r) >= {"loss", "nce"} for r in train)
    assert all("mlm" not in r and "vtm" not in r and r["loss"] == r["nce"] for r in train)
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["egomcq/questions"] == 13 and not any(k.startswith("egomcq/fusion") for k in evals[-1])
    cfg = read_model_config(out / "model.safetensors")
    assert (cfg.family, cfg.arch) == ("frozen", "frozen-in-time-tiny")


def test_pretrain_cli_trains_egovlp_with_egonce(small_world, wordpiece, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(DEMO), *frozen_overrides(small_world, out, wordpiece, "egovlp-tiny",
            **{"train.max_steps": 2})]  # fmt: skip
    assert main(argv) == 0
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("egonce" in r for r in train if r["kind"] == "train")
    assert read_model_config(out / "model.safetensors").video.num_frames == 4  # data.num_frames: the run's count


def test_init_roberta_loads_distilbert_weights_into_a_distilbert_tower(tmp_path):
    from safetensors.torch import save_file

    from egovlp.models.factory import build_model

    source = create_model("frozen-in-time-tiny")
    hf = {f"distilbert.{k}": v.clone() for k, v in source.text_model.state_dict().items()}
    hf["vocab_projector.weight"] = torch.zeros(3, 3)  # a head of the HF masked-LM file: dropped
    (tmp_path / "distilbert").mkdir()
    save_file(hf, str(tmp_path / "distilbert" / "model.safetensors"))
    torch.manual_seed(1)
    model = build_model(dataclasses.replace(source.cfg), roberta=str(tmp_path / "distilbert"))
    for k, v in source.text_model.state_dict().items():
        torch.testing.assert_close(model.text_model.state_dict()[k], v)

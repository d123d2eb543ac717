"""Text-only MLM of the text tower (``egovlp pretrain-text``) and its hand-over to pre-training (``init.roberta``)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from egovlp.cli.common import load_experiment_config
from egovlp.cli.main import main
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import DataError
from egovlp.models import EgoVLPv2
from egovlp.models.pretrained import load_roberta
from egovlp.models.weights import load_weights
from egovlp.tasks.text_mlm import (
    MaskedTexts,
    TextMLMConfig,
    TextMLMModule,
    export_roberta,
    read_corpus,
    stack_items,
    trains_in_text_mlm,
)
from helpers import as_overrides, kill_and_resume, tiny_pretrain_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "pretrain"
TEXT_CONFIG, DEMO = CONFIGS / "demo_text.yaml", CONFIGS / "demo.yaml"


def _model_cfg():
    return load_experiment_config(TextMLMConfig, str(TEXT_CONFIG), []).model


def _text_overrides(world, out_dir, **extra) -> list[str]:
    return as_overrides({
        "data.corpus": world.files["egoclip"], "data.tokenizer": world.files["tokenizer"], "data.batch_size": 16,
        "data.eval_every_nth": 5, "train.output_dir": out_dir, "train.max_steps": 4, "train.log_every": 1,
        "train.eval_every": 0, "train.save_every": 0, "train.progress": False, **extra,
    })  # fmt: skip


def test_read_corpus_from_egoclip_and_text_files(small_world, tmp_path):
    texts = read_corpus(small_world.files["egoclip"])
    assert texts and all(not t.startswith("#") for t in texts)  # cleaned narrations: "C picks up the red cube"
    assert len(read_corpus(small_world.files["egoclip"], max_rows=3)) == 3
    lines = tmp_path / "corpus.txt"
    lines.write_text("C opens the door\n\n  C closes the door  \n")
    assert read_corpus(lines) == ["C opens the door", "C closes the door"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no text"):
        read_corpus(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="not found"):
        read_corpus(tmp_path / "missing.txt")


def test_only_the_text_tower_and_mlm_head_train_and_the_loss_falls(small_world):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_dir(small_world.files["tokenizer"])
    module = TextMLMModule(EgoVLPv2(_model_cfg()))
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert "text_model.encoder.layer.0.attention.self.query.weight" in trainable and "mlm_score.bias" in trainable
    assert not any(n.startswith(("video_model.", "txt_proj.", "itm_score.")) for n in trainable)
    assert not any("crossattention_t2i" in n or "alpha_t2i" in n for n in trainable)
    assert trainable == {n for n, _ in module.model.named_parameters() if trains_in_text_mlm(n)}
    texts = read_corpus(small_world.files["egoclip"])[:16]
    data = MaskedTexts(texts, tokenizer, 12, 0.3, torch.Generator().manual_seed(0))
    batch = stack_items([data[i] for i in range(len(data))])
    assert batch["input_ids"].shape == (16, 12) and (batch["labels"] != -100).any()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        out = module(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_exported_text_tower_loads_by_name_into_a_fresh_model(tmp_path):
    torch.manual_seed(1)
    trained = EgoVLPv2(_model_cfg())
    path = export_roberta(trained, tmp_path / "roberta")
    names = set(load_file(str(path)))
    assert "embeddings.word_embeddings.weight" in names and "encoder.layer.0.output.LayerNorm.bias" in names
    assert not any("crossattention_t2i" in n or "alpha_t2i" in n for n in names)
    torch.manual_seed(2)
    fresh = EgoVLPv2(_model_cfg())
    kept = load_roberta(fresh, tmp_path / "roberta")
    assert kept and all("crossattention_t2i" in n or "alpha_t2i" in n for n in kept)
    got, want = fresh.text_model.state_dict(), trained.text_model.state_dict()
    for n in want:
        if "crossattention_t2i" in n and n.endswith(".weight"):  # fusion modules keep the fresh model's init
            assert not torch.equal(got[n], want[n]), n
        elif "crossattention_t2i" not in n and "alpha_t2i" not in n:
            assert torch.equal(got[n], want[n]), n


def test_pretrain_text_cli_then_pretrain_from_it_with_the_text_tower_fixed(small_world, tmp_path, capsys):
    text_out = tmp_path / "text"
    args = _text_overrides(small_world, text_out, **{"train.max_steps": 6, "train.eval_every": 3})
    assert main(["pretrain-text", "--config", str(TEXT_CONFIG), *args]) == 0
    assert f"text tower: {text_out / 'roberta'}" in capsys.readouterr().out
    records = [json.loads(line) for line in (text_out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6] and 0 <= evals[-1]["mlm_accuracy"] <= 100
    exported = load_file(str(text_out / "roberta" / "model.safetensors"))

    run = tmp_path / "run"
    overrides = tiny_pretrain_overrides(small_world, run, **{"init.roberta": text_out / "roberta"})
    assert main(["pretrain", "--config", str(DEMO), *overrides]) == 0  # demo.yaml: optim.freeze=[text]
    final = load_weights(run / "model.safetensors")
    for name, value in exported.items():  # the text tower stayed exactly as stage 1 left it
        torch.testing.assert_close(final[f"text_model.{name}"], value, rtol=0, atol=0, msg=name)
    gate = next(k for k in final if k.endswith("alpha_t2i"))
    assert float(final[gate].abs().sum()) > 0  # the gates inside the fixed text tower trained (they start at 0)


def test_pretrain_text_resume_gives_the_uninterrupted_losses(small_world, tmp_path, monkeypatch):
    from egovlp.cli.pretrain import pretrain_text

    def run(name, **extra):
        overrides = _text_overrides(small_world, tmp_path / name, **extra)
        return pretrain_text(load_experiment_config(TextMLMConfig, str(TEXT_CONFIG), overrides))

    full, resumed = kill_and_resume(run, monkeypatch, 4, {"train.max_steps": 6, "train.save_every": 3})
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    for a, b in zip(full.history[3:], resumed.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-6)


def test_pretrain_text_cli_names_missing_settings(tmp_path, capsys):
    assert main(["pretrain-text", "--config", str(TEXT_CONFIG), "data.corpus=''", f"train.output_dir={tmp_path}"]) == 1
    assert "data.corpus is not set" in capsys.readouterr().err

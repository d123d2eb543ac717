"""The DistilBERT text tower: parity with ``transformers``' DistilBertModel, HF weights by name, dual-only."""

import dataclasses

import pytest
import torch

from egovlp.errors import CheckpointError, ConfigError
from egovlp.models.config import TextConfig
from egovlp.models.distilbert import DistilBertModel, load_distilbert
from egovlp.models.text import build_text_tower

from .conftest import randomise_

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing is downloaded: the HuggingFace models are built from configs and saved to local folders."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


CFG = TextConfig(
    kind="distilbert",
    tokenizer="wordpiece",
    vocab_size=120,
    width=32,
    depth=3,
    num_heads=4,
    ffn_dim=64,
    max_positions=40,
    pad_token_id=0,
    ln_eps=1e-12,
    dropout=0.0,
)


def hf_config():
    return transformers.DistilBertConfig(
        vocab_size=CFG.vocab_size,
        dim=CFG.width,
        n_layers=CFG.depth,
        n_heads=CFG.num_heads,
        hidden_dim=CFG.ffn_dim,
        max_position_embeddings=CFG.max_positions,
        pad_token_id=0,
        dropout=0.0,
        attention_dropout=0.0,
    )


def ids_and_mask():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 120, (3, 8), generator=g)
    ids[:, 0] = 101 % 120  # a [CLS]-like first token
    mask = torch.ones(3, 8, dtype=torch.long)
    ids[1, 6:], mask[1, 6:] = 0, 0  # [PAD] = 0
    ids[2, 3:], mask[2, 3:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_distilbert_tower_equals_transformers(impl):
    torch.manual_seed(0)
    hf = randomise_(transformers.DistilBertModel(hf_config()), std=0.1).eval()
    ours = DistilBertModel(CFG).eval()
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    ours.load_state_dict(state, strict=True)  # every HF name is ours and vice versa
    for m in ours.modules():
        if hasattr(m, "attn_impl"):
            m.attn_impl = impl
    ids, mask = ids_and_mask()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=2e-5, rtol=1e-5)
    # padding changes nothing at the real tokens: the same texts unpadded give the same states
    with torch.no_grad():
        short = ours(ids[2:, :3], mask[2:, :3])
    torch.testing.assert_close(short[0], got[2, :3], atol=2e-5, rtol=1e-5)


def test_positions_start_at_zero_and_padding_gets_positions():
    """Unlike RoBERTa, DistilBERT's positions are 0..L-1 whatever the padding (hand-computed embedding)."""
    emb = randomise_(DistilBertModel(CFG)).embeddings.eval()
    ids = torch.tensor([[7, 8, 9, 0, 0]])
    x = emb.word_embeddings(ids) + emb.position_embeddings.weight[:5]
    torch.testing.assert_close(emb(ids), emb.LayerNorm(x))


@pytest.mark.parametrize("head", [False, True])
def test_local_huggingface_directory_loads_by_name(tmp_path, head):
    """A ``save_pretrained`` folder (bare model, or the MLM model ``distilbert-base-uncased`` ships) loads strictly."""
    torch.manual_seed(1)
    cls = transformers.DistilBertForMaskedLM if head else transformers.DistilBertModel
    hf = randomise_(cls(hf_config()), std=0.1).eval()
    hf.save_pretrained(tmp_path)
    ours = DistilBertModel(CFG).eval()
    load_distilbert(ours, tmp_path)
    base = hf.distilbert if head else hf
    ids, mask = ids_and_mask()
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask)[mask.bool()], expected[mask.bool()], atol=2e-5, rtol=1e-5)


def test_a_mismatched_huggingface_directory_is_named(tmp_path):
    transformers.DistilBertModel(hf_config()).save_pretrained(tmp_path)
    wider = dataclasses.replace(CFG, ffn_dim=128)
    with pytest.raises(CheckpointError, match=r"ffn\.lin1\.weight: file \(64, 32\) vs model \(128, 32\)") as e:
        load_distilbert(DistilBertModel(wider), tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="none of model.safetensors, pytorch_model.bin found"):
        load_distilbert(DistilBertModel(CFG), tmp_path / "empty")


def test_distilbert_is_dual_only():
    with pytest.raises(ConfigError, match="DistilBERT text tower has no fusion layers.*got 2"):
        build_text_tower(CFG, 2, 64)
    tower = build_text_tower(CFG, 0, 64)
    assert isinstance(tower, DistilBertModel)
    h = tower.embeddings(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no cross-attention"):
        tower.run_layer(0, h, None, video=torch.zeros(1, 5, 64))


def test_too_long_text_is_a_clear_error():
    with pytest.raises(ValueError, match="41 tokens is longer than the 40 position embeddings"):
        DistilBertModel(CFG)(torch.zeros(1, 41, dtype=torch.long))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(2)
    ids, mask = ids_and_mask()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(2)
        tower = DistilBertModel(CFG).train()
        tower.grad_checkpointing = ckpt
        tower(ids, mask)[:, 0].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tower.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0

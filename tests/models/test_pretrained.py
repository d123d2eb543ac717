import numpy as np
import pytest
import torch

from egovlp.errors import CheckpointError
from egovlp.models import create_model
from egovlp.models.pretrained import load_roberta, load_vit, resize_pos_embed

from .conftest import randomise_

transformers = pytest.importorskip("transformers")


def _hf_tiny(model):
    t = model.cfg.text
    config = transformers.RobertaConfig(
        vocab_size=t.vocab_size,
        hidden_size=t.width,
        num_hidden_layers=t.depth,
        num_attention_heads=t.num_heads,
        intermediate_size=t.ffn_dim,
        max_position_embeddings=t.max_positions,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,  # as roberta-base (RobertaConfig's default is 1e-12)
    )
    return randomise_(transformers.RobertaForMaskedLM(config), std=0.05).eval()


@pytest.mark.parametrize("safe", [True, False])
def test_roberta_weights_load_by_name(tmp_path, safe):
    model = create_model("egovlpv2-tiny").eval()
    hf = _hf_tiny(model)
    hf.save_pretrained(tmp_path, safe_serialization=safe)
    kept = load_roberta(model, tmp_path)
    assert kept and all("crossattention_t2i" in k or "alpha_t2i" in k for k in kept)
    ids = torch.tensor([[0, 11, 12, 13, 2, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = hf.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        got = model.text_model(ids, mask)
    torch.testing.assert_close(got[:, :5], expected[:, :5], atol=2e-5, rtol=1e-5)


def test_roberta_wrong_vocab_is_reported(tmp_path):
    model = create_model("egovlpv2-tiny")
    other = create_model("egovlpv2-tiny-deepfusion")  # width 32 instead of 64
    hf = _hf_tiny(other)
    hf.save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"embeddings.word_embeddings.weight: file \(1000, 32\) vs model \(1000, 64\)"
    ):
        load_roberta(model, tmp_path)


def _timm_state(video_model):
    """What a timm ViT state dict looks like for this tower: spatial parts only, plus a classifier head."""
    keep = ("cls_token", "pos_embed", "patch_embed.", "norm.")
    spatial = (".norm1.", ".attn.qkv.", ".attn.proj.", ".norm2.", ".mlp.")
    state = {
        k: torch.randn_like(v)
        for k, v in video_model.state_dict().items()
        if k.startswith(keep) or (k.startswith("blocks.") and any(s in k for s in spatial) and "_i2t" not in k)
    }
    state["head.weight"] = torch.randn(10, video_model.cfg.width)
    state["head.bias"] = torch.randn(10)
    return state


def _to_npz(state, depth, heads):
    """Inverse of the loader's npz mapping: timm names -> Google ViT .npz names."""
    a = {
        "embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0).numpy(),
        "embedding/bias": state["patch_embed.proj.bias"].numpy(),
        "cls": state["cls_token"].numpy(),
        "Transformer/posembed_input/pos_embedding": state["pos_embed"].numpy(),
        "Transformer/encoder_norm/scale": state["norm.weight"].numpy(),
        "Transformer/encoder_norm/bias": state["norm.bias"].numpy(),
    }
    for i in range(depth):
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        dim = state[b + "norm1.weight"].shape[0]
        qkv_w, qkv_b = state[b + "attn.qkv.weight"].chunk(3), state[b + "attn.qkv.bias"].chunk(3)
        for n, w, bias in zip(("query", "key", "value"), qkv_w, qkv_b):
            a[f"{p}MultiHeadDotProductAttention_1/{n}/kernel"] = w.T.reshape(dim, heads, -1).numpy()
            a[f"{p}MultiHeadDotProductAttention_1/{n}/bias"] = bias.reshape(heads, -1).numpy()
        a[f"{p}MultiHeadDotProductAttention_1/out/kernel"] = (
            state[b + "attn.proj.weight"].T.reshape(heads, -1, dim).numpy()
        )
        a[f"{p}MultiHeadDotProductAttention_1/out/bias"] = state[b + "attn.proj.bias"].numpy()
        for ln, name in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            a[f"{p}{ln}/scale"] = state[f"{b}{name}.weight"].numpy()
            a[f"{p}{ln}/bias"] = state[f"{b}{name}.bias"].numpy()
        for dense, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            a[f"{p}MlpBlock_3/{dense}/kernel"] = state[f"{b}mlp.{name}.weight"].T.numpy()
            a[f"{p}MlpBlock_3/{dense}/bias"] = state[f"{b}mlp.{name}.bias"].numpy()
    a["head/kernel"] = np.zeros((dim, 10), np.float32)
    return a


@pytest.mark.parametrize("fmt", ["pth", "npz"])
def test_vit_weights_fill_spatial_parts_only(tmp_path, fmt):
    model = create_model("egovlpv2-tiny")
    before = {k: v.clone() for k, v in model.video_model.state_dict().items()}
    state = _timm_state(model.video_model)
    path = tmp_path / f"vit.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        np.savez(path, **_to_npz(state, model.cfg.video.depth, model.cfg.video.num_heads))
    kept = load_vit(model, path)
    after = model.video_model.state_dict()
    for k, v in state.items():
        if not k.startswith("head."):
            torch.testing.assert_close(after[k], v, msg=k)
    assert any("timeattn" in k for k in kept) and "temporal_embed" in kept
    for k in kept:
        torch.testing.assert_close(after[k], before[k], msg=k)


def test_vit_pos_embed_resampled_for_another_resolution(tmp_path):
    model = create_model("egovlpv2-tiny")  # 32 px / patch 8 -> 4x4 grid
    state = _timm_state(model.video_model)
    state["pos_embed"] = torch.randn(1, 1 + 64, 64)  # 8x8 grid
    torch.save(state, tmp_path / "vit.pth")
    load_vit(model, tmp_path / "vit.pth")
    torch.testing.assert_close(model.video_model.pos_embed.data, resize_pos_embed(state["pos_embed"], 16))
    smooth = torch.arange(4.0).repeat(4)[None, :, None].expand(1, 16, 3)
    const = torch.cat([torch.zeros(1, 1, 3), smooth], 1)
    assert resize_pos_embed(const, 16).shape == (1, 17, 3)


def test_full_pickle_is_refused_for_backbone_weights(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    model = create_model("egovlpv2-tiny")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_vit(model, tmp_path / "evil.pth")

import dataclasses

import pytest
import torch

from egovlp.errors import ConfigError
from egovlp.models import EgoVLPv2, create_model, get_model_config, list_models
from egovlp.models.layers import additive_mask

from .conftest import randomise_


def test_dual_and_fused_shapes_and_backward(tiny_model, batch):
    video, ids, mask = batch
    model = tiny_model.train()
    v, t = model(video, ids, mask)
    assert v.shape == t.shape == (2, 64)
    fused = model(video, ids, mask, fusion=True)
    assert fused.video.shape == (2, 1 + 4 * 16, 64) and fused.text.shape == (2, 9, 64)
    vtm, mlm = model.vtm_logits(fused), model.mlm_logits(fused)
    assert vtm.shape == (2, 2) and mlm.shape == (2, 9, 1000)
    (v.sum() + t.sum() + vtm.sum() + mlm.mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize("arch", ["egovlpv2-tiny", "egovlpv2-tiny-deepfusion"])
def test_sdpa_equals_reference_attention(arch, batch):
    model = randomise_(create_model(arch)).eval()
    video, ids, mask = batch
    outs = {}
    for impl in ("sdpa", "reference"):
        model.set_attention_impl(impl)
        with torch.no_grad():
            f = model.fuse(video, ids, mask)
            outs[impl] = (model.encode_video(video), model.encode_text(ids, mask), f.video, f.text, model.vtm_logits(f))
    for a, b in zip(outs["sdpa"], outs["reference"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_gates_at_zero_make_fused_equal_dual(tiny_cfg, batch):
    cfg = dataclasses.replace(tiny_cfg, fusion_ln_eps=tiny_cfg.video.ln_eps)
    model = randomise_(EgoVLPv2(cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha_i2t", "alpha_t2i")):
                p.zero_()
        model.cls_token.copy_(model.video_model.cls_token)
        model.norm.load_state_dict(model.video_model.norm.state_dict())
    video, ids, mask = batch
    with torch.no_grad():
        fused = model.fuse(video, ids, mask)
        dual_video = model.video_model.norm(model.video_model.forward_features(video))
        dual_text = model.text_model(ids, mask)
    torch.testing.assert_close(fused.video, dual_video, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused.text, dual_text, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # and the gates really switch fusion on
        model.video_model.blocks[-1].attn.alpha_i2t.fill_(1.0)
        model.text_model.encoder.layer[-1].alpha_t2i.fill_(1.0)
        fused_on = model.fuse(video, ids, mask)
    assert (fused_on.video - fused.video).abs().max() > 1e-3
    assert (fused_on.text - fused.text).abs().max() > 1e-3


def test_co_attention_uses_the_other_streams_input(tiny_model, batch):
    """At each fused depth both streams read the other's INPUT: recompute by hand and compare."""
    model = tiny_model
    video, ids, mask = batch
    with torch.no_grad():
        v = model.video_lower(video)
        t = model.text_lower(ids, mask)
        add = additive_mask(mask, t.dtype)
        for k in range(model.cfg.num_fusion_layers):
            v_in, t_in = v, t
            v = model.video_model.blocks[model.first_fused_video + k](v_in, 4, t_in, add)
            t = model.text_model.encoder.layer[model.first_fused_text + k](t_in, add, v_in)
        fused = model.fuse(video, ids, mask)
    torch.testing.assert_close(fused.video, model.norm(v))
    torch.testing.assert_close(fused.text, t)


def test_padded_text_tokens_do_not_reach_the_video(tiny_model, batch):
    video, ids, mask = batch
    ids2 = ids.clone()
    ids2[1, 7:] = 77  # change only padded positions (mask stays 0 there)
    with torch.no_grad():
        a = tiny_model.fuse(video, ids, mask).video
        b = tiny_model.fuse(video, ids2, mask).video
    torch.testing.assert_close(a, b)


def test_gradient_checkpointing_same_gradients(tiny_cfg, batch):
    video, ids, mask = batch
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = randomise_(EgoVLPv2(dataclasses.replace(tiny_cfg, grad_checkpointing=ckpt))).train()
        torch.manual_seed(1)  # same dropout masks in both runs
        f = model.fuse(video, ids, mask)
        v, t = model(video, ids, mask)
        (model.vtm_logits(f).sum() + model.mlm_logits(f).mean() + v.sum() + t.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4, msg=n)


def test_projector_layouts():
    mlp = get_model_config("egovlpv2-base")
    with torch.device("meta"):
        model = EgoVLPv2(mlp)
        small = EgoVLPv2(get_model_config("egovlpv2-base-smallproj"))
    assert [type(m).__name__ for m in model.txt_proj] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert model.txt_proj[0].bias is None and model.txt_proj[0].weight.shape == (4096, 768)
    assert [type(m).__name__ for m in small.txt_proj] == ["ReLU", "Linear"]  # ReLU first on the text side
    assert [type(m).__name__ for m in small.vid_proj] == ["Linear"]
    assert small.txt_proj[1].weight.shape == (256, 768)
    # the MLM decoder is not tied to the word embeddings
    assert model.mlm_score.decoder.weight is not model.text_model.embeddings.word_embeddings.weight


def test_projector_small_applies_relu_before_linear():
    model = create_model("egovlpv2-tiny-smallproj").eval()
    x = torch.randn(3, 64)
    torch.testing.assert_close(model.txt_proj(x), model.txt_proj[1](x.clamp(min=0)))


def test_dual_only_model_and_registry_errors():
    model = create_model(dataclasses.replace(get_model_config("egovlpv2-tiny"), num_fusion_layers=0))
    assert not hasattr(model, "itm_score") and not hasattr(model, "cls_token")
    with pytest.raises(RuntimeError, match="no fusion layers"):
        model.fuse(torch.zeros(1, 4, 3, 32, 32), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3))
    assert "egovlpv2-base" in list_models()
    with pytest.raises(ConfigError, match="did you mean egovlpv2-tiny"):
        get_model_config("egovlpv2-tyni")
    with pytest.raises(ConfigError, match="num_fusion_layers"):
        dataclasses.replace(get_model_config("egovlpv2-tiny"), num_fusion_layers=7)


def test_parameter_groups_markers(tiny_model):
    new = {n for n, _ in tiny_model.named_parameters() if tiny_model.is_new_parameter(n)}
    assert "cls_token" in new and "norm.weight" in new and "itm_score.fc.weight" in new
    assert "video_model.blocks.3.attn.qkv_i2t.weight" in new and "text_model.encoder.layer.3.alpha_t2i" in new
    assert "video_model.blocks.3.attn.qkv.weight" not in new and "video_model.norm.weight" not in new
    assert tiny_model.no_weight_decay("video_model.pos_embed", tiny_model.video_model.pos_embed)
    assert not tiny_model.no_weight_decay("txt_proj.0.weight", tiny_model.txt_proj[0].weight)


def test_resize_temporal_embed_updates_config(tiny_model):
    tiny_model.resize_temporal_embed(8)
    assert tiny_model.cfg.video.num_frames == 8 and tiny_model.video_model.temporal_embed.shape == (1, 8, 64)
    assert tiny_model.encode_video(torch.randn(1, 8, 3, 32, 32)).shape == (1, 64)


def test_partial_outputs_equal_full_pass(tiny_model, batch):
    """CLS-only last blocks and the skipped last video block change nothing that is read."""
    video, ids, mask = batch
    with torch.no_grad():
        full = tiny_model.fuse(video, ids, mask)
        cls = tiny_model.fuse(video, ids, mask, video_out="cls")
        none = tiny_model.fuse(video, ids, mask, video_out="none")
        dual_full = tiny_model.video_model.norm(tiny_model.video_model.forward_features(video))[:, 0]
    torch.testing.assert_close(cls.video[:, 0], full.video[:, 0])
    torch.testing.assert_close(cls.text, full.text)
    assert none.video is None
    torch.testing.assert_close(none.text, full.text)
    torch.testing.assert_close(tiny_model.vtm_logits(cls), tiny_model.vtm_logits(full))
    torch.testing.assert_close(tiny_model.video_model(video), dual_full)


def test_frames_block_uses_an_interpolated_copy_and_restores_the_trained_embedding(tiny_model):
    """The model owns temporary frame-count changes: inside ``frames(8)`` an interpolated copy serves 8 frames (the
    release's resize), afterwards the trained parameter object is back, untouched; fewer frames need nothing."""
    from egovlp.models.video import resize_temporal_embed

    trained = tiny_model.video_model.temporal_embed
    before = trained.detach().clone()
    video = torch.randn(1, 8, 3, 32, 32)
    with pytest.raises(ValueError, match="video has 8 frames but the temporal embedding holds 4"):
        tiny_model.encode_video(video)
    with torch.no_grad(), tiny_model.frames(8):
        inside = tiny_model.video_model.temporal_embed
        assert inside is not trained and inside.shape[1] == 8 and not inside.requires_grad
        torch.testing.assert_close(inside.detach(), resize_temporal_embed(before, 8))
        out = tiny_model.encode_video(video)
    assert tiny_model.video_model.temporal_embed is trained and torch.equal(trained.detach(), before)
    assert tiny_model.cfg.video.num_frames == 4 and out.shape[0] == 1
    with tiny_model.frames(2):
        assert tiny_model.video_model.temporal_embed is trained  # fewer frames: the tower uses the first rows


def test_recorded_cross_attention_is_what_the_fused_pass_computes(tiny_model, batch):
    """record_cross_attention returns each fused text layer's text-to-video attention from the model's own forward:
    probabilities that equal softmax(q k^T / sqrt(d)) of the layer's inputs (captured by a hook), sum to 1 over the
    video tokens, and leave the fused output unchanged."""
    with torch.no_grad():  # open gates, so the cross-attention changes the states
        for n, p in tiny_model.named_parameters():
            if "alpha" in n:
                p.fill_(0.7)
    video, ids, mask = batch
    inputs: dict[int, tuple] = {}
    layers = tiny_model.text_model.encoder.layer
    first = tiny_model.first_fused_text
    hooks = [
        layers[i].crossattention_t2i.self.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a))
        for i in range(first, len(layers))
    ]
    with torch.no_grad():
        plain = tiny_model.fuse(video, ids, mask)
        with tiny_model.record_cross_attention() as records:
            fused = tiny_model.fuse(video, ids, mask)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(fused.text, plain.text, atol=1e-5, rtol=1e-5)
    assert sorted(records) == list(range(first, len(layers))) and all(len(r) == 1 for r in records.values())
    n_video = 1 + video.shape[1] * tiny_model.cfg.video.patches_per_frame
    for i, (probs,) in records.items():
        module = layers[i].crossattention_t2i.self
        x, context = inputs[i]
        heads = module.num_heads
        q = module.query(x).view(*x.shape[:2], heads, -1).transpose(1, 2)
        k = module.key(context).view(*context.shape[:2], heads, -1).transpose(1, 2)
        want = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        assert probs.shape == (2, heads, ids.shape[1], n_video)
        torch.testing.assert_close(probs, want)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert all(layers[i].crossattention_t2i.self.recording is None for i in records)  # nothing kept after

import math

import pytest
import torch

from egovlp.models.config import VideoConfig
from egovlp.models.video import SpaceTimeAttention, SpaceTimeBlock, SpaceTimeTransformer, resize_temporal_embed

from .conftest import randomise_

CFG = VideoConfig(img_size=16, patch_size=8, width=16, depth=2, num_heads=2, num_frames=3)


def naive_attention(mod: SpaceTimeAttention, x: torch.Tensor, f: int, axis: str) -> torch.Tensor:
    """Loop-by-loop divided attention straight from REFERENCE §1 (one query token at a time)."""
    b, n, c = x.shape
    h, d = mod.num_heads, c // mod.num_heads
    p = (n - 1) // f
    q, k, v = mod.qkv(x).split(c, dim=-1)
    out = torch.zeros(b, n, c)
    for bi in range(b):
        for i in range(n):
            if i == 0:
                keys = list(range(n))  # CLS attends to every token, itself included
            else:
                fi, pi = divmod(i - 1, p)
                if axis == "space":  # CLS + the patches of its own frame
                    keys = [0] + [1 + fi * p + j for j in range(p)]
                else:  # CLS + its own spatial position in every frame
                    keys = [0] + [1 + fj * p + pi for fj in range(f)]
            for hi in range(h):
                sl = slice(hi * d, (hi + 1) * d)
                s = torch.stack([q[bi, i, sl] @ k[bi, j, sl] for j in keys]) / math.sqrt(d)
                w = s.softmax(0)
                out[bi, i, sl] = sum(w[t] * v[bi, j, sl] for t, j in enumerate(keys))
    return mod.proj(out)


@pytest.mark.parametrize("axis", ["space", "time"])
def test_space_time_attention_matches_naive_loops(axis):
    mod = randomise_(SpaceTimeAttention(16, 2)).eval()
    x = torch.randn(2, 1 + 3 * 4, 16)
    for impl in ("sdpa", "reference"):
        mod.attn_impl = impl
        torch.testing.assert_close(mod(x, 3, axis), naive_attention(mod, x, 3, axis), atol=1e-5, rtol=1e-5)


def test_block_follows_release_residual_quirk():
    blk = randomise_(SpaceTimeBlock(CFG)).eval()
    x = torch.randn(2, 1 + 3 * 4, 16)
    t = x + naive_attention(blk.timeattn, blk.norm3(x), 3, "time")
    s = naive_attention(blk.attn, blk.norm1(t), 3, "space")
    x1 = x + s  # residual is x, not t
    expected = x1 + blk.mlp(blk.norm2(x1))
    torch.testing.assert_close(blk(x, 3), expected, atol=1e-5, rtol=1e-5)


def test_embedding_layout_frame_major():
    model = randomise_(SpaceTimeTransformer(CFG)).eval()
    video = torch.randn(1, 3, 3, 16, 16)
    x = model.embed(video)
    assert x.shape == (1, 1 + 3 * 4, 16)
    patches = model.patch_embed.proj(video[0])  # (F, D, 2, 2)
    for f in range(3):
        for p in range(4):
            expected = patches[f].flatten(1)[:, p] + model.pos_embed[0, 1 + p] + model.temporal_embed[0, f]
            torch.testing.assert_close(x[0, 1 + f * 4 + p], expected)
    torch.testing.assert_close(x[0, 0], model.cls_token[0, 0] + model.pos_embed[0, 0])


def test_time_attention_is_zero_at_init_and_fewer_frames_accepted():
    model = SpaceTimeTransformer(CFG).eval()
    x = torch.randn(2, 1 + 3 * 4, 16)
    assert model.blocks[0].timeattn(x, 3, "time").abs().max() == 0
    assert model(torch.randn(2, 2, 3, 16, 16)).shape == (2, 16)  # 2 of 3 frames: temporal embed sliced
    with pytest.raises(ValueError, match="4 frames but the temporal embedding holds 3"):
        model(torch.randn(1, 4, 3, 16, 16))


def test_resize_temporal_embed_interpolates_and_truncates():
    embed = torch.tensor([[[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0]]])  # (1, 4, 2)
    up = resize_temporal_embed(embed, 7)
    torch.testing.assert_close(up[0, :, 0], torch.arange(7) * 0.5)  # align_corners=True: endpoints kept
    torch.testing.assert_close(up[0, :, 1], 10 + torch.arange(7) * 5.0)
    torch.testing.assert_close(resize_temporal_embed(embed, 2), embed[:, :2])
    assert resize_temporal_embed(embed, 4) is embed


def test_gradient_checkpointing_same_gradients():
    model = randomise_(SpaceTimeTransformer(CFG)).train()
    video = torch.randn(2, 3, 3, 16, 16)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.grad_checkpointing = ckpt
        model(video).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_temporal_embedding_starts_at_zero_unless_asked():
    """The release's zero temporal embedding makes an untrained tower blind to frame order; a random start does not."""
    cfg = VideoConfig(img_size=32, patch_size=16, width=32, depth=2, num_heads=4, num_frames=4)
    video = torch.randn(2, 4, 3, 32, 32)
    torch.manual_seed(0)
    zero = SpaceTimeTransformer(cfg).eval()
    assert torch.count_nonzero(zero.temporal_embed) == 0
    torch.testing.assert_close(zero(video), zero(video.flip(1)))  # order-blind at init (time attention is 0 too)
    torch.manual_seed(0)
    rand = SpaceTimeTransformer(VideoConfig(**{**cfg.__dict__, "temporal_init_std": 0.5})).eval()
    std = rand.temporal_embed.std().item()
    assert 0.3 < std < 0.6 and rand.temporal_embed.abs().max() <= 1.0  # truncated at 2 std
    assert not torch.allclose(rand(video), rand(video.flip(1)), atol=1e-4)

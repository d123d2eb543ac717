"""Cross-attention maps: equal to a loop computed from the explicit attention of each fused layer's inputs, normalised
over the patches, per word with sub-tokens merged, for one layer or all; clear errors for what cannot be drawn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.errors import ConfigError
from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.viz import SENTENCE, attention_maps, fused_layers, word_groups
from egovlp.viz.attention import maps_from_probabilities

TEXT = "#C C tightens the bolt with the T-wrench"


def clip(seed: int = 0, frames: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 40, 56, 3), dtype=np.uint8)


def reference_maps(model, tokenizer, frames: np.ndarray, text: str, layers) -> tuple[np.ndarray, list[list[int]]]:
    """Maps by hand: softmax(q k^T / sqrt(d)) of each fused layer's inputs (captured by hooks in a forward that does
    not record), then loops over words, tokens, heads and patches."""
    inputs: dict[int, tuple] = {}
    blocks = model.text_model.encoder.layer
    hooks = [
        blocks[i].crossattention_t2i.self.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a))
        for i in layers
    ]
    tokens = tokenizer([text])
    video = eval_transform(model.cfg.video.img_size)(frames)[None]
    with torch.no_grad():
        model.fuse(video, tokens["input_ids"], tokens["attention_mask"])
    for h in hooks:
        h.remove()
    probs = {}
    for i in layers:
        module = blocks[i].crossattention_t2i.self
        x, context = inputs[i]
        heads = module.num_heads
        q = module.query(x)[0].view(x.shape[1], heads, -1).transpose(0, 1)  # (H, L, d)
        k = module.key(context)[0].view(context.shape[1], heads, -1).transpose(0, 1)  # (H, N, d)
        probs[i] = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1).detach().numpy()
    # word groups by hand: the tokens of each whitespace-separated word, after <s>
    groups, position = [], 1
    for word in text.split():
        n = len(tokenizer.encode(word if position == 1 else " " + word))
        groups.append(list(range(position, position + n)))
        position += n
    groups.append([k for g in groups for k in g])
    num_frames, grid = frames.shape[0], model.cfg.video.img_size // model.cfg.video.patch_size
    heads = next(iter(probs.values())).shape[0]
    out = np.zeros((len(groups), num_frames, grid, grid))
    for w, group in enumerate(groups):
        for f in range(num_frames):
            for r in range(grid):
                for c in range(grid):
                    column = 1 + f * grid * grid + r * grid + c
                    total = 0.0
                    for i in layers:
                        for h in range(heads):
                            for t in group:
                                total += probs[i][h, t, column]
                    out[w, f, r, c] = total / (len(layers) * heads * len(group))
        cls = np.mean([probs[i][h, t, 0] for i in layers for h in range(heads) for t in group])
        out[w] /= 1 - cls
    return out, groups


@pytest.mark.parametrize("layer", ["all", 3])
def test_maps_equal_the_explicit_attention_reference(model, tokenizer, layer):
    frames = clip()
    maps = attention_maps(model, tokenizer, frames, TEXT, layer)
    layers = fused_layers(model, layer)
    want, groups = reference_maps(model, tokenizer, frames, TEXT, layers)
    assert maps.layers == ((2, 3) if layer == "all" else (3,))
    assert maps.labels == (*TEXT.split(), SENTENCE)
    assert maps.maps.shape == (len(groups), 4, 4, 4) and maps.frames.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(maps.maps, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(maps.maps.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)  # a distribution over the patches
    assert np.all((maps.cls_share > 0) & (maps.cls_share < 1))


def test_layers_differ_and_the_mean_is_their_average(model, tokenizer):
    frames = clip(1)
    one, two = (attention_maps(model, tokenizer, frames, TEXT, i) for i in (2, 3))
    assert not np.allclose(one.maps, two.maps, atol=1e-4)  # the layers attend differently: the choice matters
    both = attention_maps(model, tokenizer, frames, TEXT, "all")
    # the mean of probabilities over layers, then normalised over patches: weights are each layer's patch mass
    mass = np.stack([1 - one.cls_share, 1 - two.cls_share])[..., None, None, None]
    want = (one.maps * mass[0] + two.maps * mass[1]) / mass.sum(0)
    np.testing.assert_allclose(both.maps, want, rtol=1e-4, atol=1e-7)


def test_maps_from_probabilities_by_hand():
    """Two heads, three tokens (<s>, a two-token word, </s>), one frame of 1x2 patches plus CLS."""
    probs = torch.tensor(
        [[[0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]]]
    )  # (H=2, L=3, 1 + 2)
    maps, cls = maps_from_probabilities({7: probs}, [[1, 2]], 1, (1, 2))
    # head mean: token 1 -> (0.3, 0.3, 0.4), token 2 -> (0, 0.5, 0.5); word mean (0.15, 0.4, 0.45)
    np.testing.assert_allclose(cls, [0.15, 0.15], rtol=1e-6)
    np.testing.assert_allclose(maps[0, 0, 0], [0.4 / 0.85, 0.45 / 0.85], rtol=1e-6)
    np.testing.assert_allclose(maps[1], maps[0])  # the sentence is the one word


def test_sub_tokens_are_merged_into_words(tokenizer):
    text = "C tightens the zyxwvutsrq-bolt, carefully"
    ids = tokenizer.encode(text)
    words, groups = word_groups(tokenizer, ids)
    assert words == tuple(text.split())
    assert [k for g in groups for k in g] == list(range(len(ids)))  # every token once, in order
    assert len(groups[3]) > 1  # the unseen word is several BPE tokens, merged


def test_wordpiece_sub_tokens_are_merged():
    texts = ["C tightens the bolt on the bicycle", "C opens the drawer", "the bike and the bicycle"] * 10
    tok = Tokenizer.train(texts, vocab_size=60, kind="wordpiece")
    ids = tok.encode("C tightens the bicycles")
    words, groups = word_groups(tok, ids)
    assert words == ("c", "tightens", "the", "bicycles")
    assert [k for g in groups for k in g] == list(range(len(ids))) and max(len(g) for g in groups) > 1


def test_what_cannot_be_drawn_is_refused(model, tokenizer):
    with pytest.raises(ConfigError, match="not a fused layer .* choose one of 2, 3"):
        attention_maps(model, tokenizer, clip(), TEXT, 1)
    with pytest.raises(ConfigError, match="fused text layer index"):
        attention_maps(model, tokenizer, clip(), TEXT, "last")
    with pytest.raises(ConfigError, match="no tokens"):
        attention_maps(model, tokenizer, clip(), "   ", "all")
    with pytest.raises(ConfigError, match="at most 62"):
        attention_maps(model, tokenizer, clip(), "the " * 70, "all")
    tiny = get_model_config("egovlpv2-tiny")
    dual = EgoVLPv2(dataclasses.replace(tiny, num_fusion_layers=0, vtm_head=False, mlm_head=False))
    with pytest.raises(ConfigError, match="no fusion layers"):
        attention_maps(dual, tokenizer, clip(), TEXT)

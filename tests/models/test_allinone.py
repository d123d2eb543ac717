"""The All-in-one model: temporal token rolling, the frame mean, padding masks, single-modality paths, patch order."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from egovlp.cli.main import main
from egovlp.errors import ConfigError
from egovlp.models.allinone_config import AllInOneConfig
from egovlp.models.allinone_layers import roll_fold, temporal_roll, temporal_roll_reference
from egovlp.models.allinone_model import AllInOne
from egovlp.models.registry import create_model, get_family, get_model_config

from .conftest import randomise_


def tiny(arch: str = "allinone-test", **kw) -> AllInOne:
    cfg = dataclasses.replace(get_model_config(arch), **kw)
    model = AllInOne(cfg)
    return randomise_(model, 0.3).eval()


def zero_temporal(model: AllInOne) -> AllInOne:
    with torch.no_grad():
        model.transformer.temporal_embed.zero_()
    return model


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    video = torch.randn(2, 3, 3, 32, 32, generator=g)
    ids = torch.randint(1, 1000, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return video, ids, mask


# ------------------------------------------------------------------------------------------ temporal token rolling
def test_roll_matches_the_hand_built_table_for_three_frames():
    """families.md §4a [checked], l = 197, T = 3: fold 24; token 1 <- frames [2, 0, 1]; token 196 <- [1, 2, 0];
    CLS and token 100 unchanged."""
    t, length = 3, 197
    assert roll_fold(length) == 24
    # token (frame f, index i) holds the value 1000 * f + i, so the source frame of every output can be read off
    x = (torch.arange(t)[:, None] * 1000 + torch.arange(length)[None]).float()[:, :, None]  # (T, l, 1)
    out = temporal_roll(x, t)[:, :, 0]
    source = (out // 1000).long()
    assert torch.equal(out % 1000, torch.arange(length).float().expand(t, -1))  # indices never move
    assert source[:, 1].tolist() == [2, 0, 1] and source[:, 24].tolist() == [2, 0, 1]
    assert source[:, 196].tolist() == [1, 2, 0] and source[:, 173].tolist() == [1, 2, 0]
    for unchanged in (0, 25, 100, 172):
        assert source[:, unchanged].tolist() == [0, 1, 2]
    assert int((source != torch.arange(t)[:, None]).sum(dim=1)[0]) == 48  # 2 x 24 exchanged per frame


@pytest.mark.parametrize("frames,length,div", [(3, 197, 8), (4, 17, 8), (2, 10, 3), (5, 9, 4), (1, 20, 8)])
def test_fast_roll_equals_the_index_loop(frames, length, div):
    x = torch.randn(2 * frames, length, 5)
    torch.testing.assert_close(temporal_roll(x, frames, div), temporal_roll_reference(x, frames, div))


def test_roll_div_below_three_is_refused():
    with pytest.raises(ConfigError, match="roll_div must be >= 3"):
        dataclasses.replace(get_model_config("allinone-test"), roll_div=2)


# ----------------------------------------------------------------------------------------------- joint semantics
def test_identical_frames_average_to_the_one_frame_pass(batch):
    """Without a temporal embedding, T copies of a frame roll onto themselves and their mean is the 1-frame pass."""
    model = zero_temporal(tiny())
    video, ids, mask = batch
    copies = video[:, :1].expand(-1, 3, -1, -1, -1)
    with torch.no_grad():
        many, one = model.joint(copies, ids, mask), model.joint(video[:, :1], ids, mask)
    torch.testing.assert_close(many.cls_feats, one.cls_feats)
    torch.testing.assert_close(many.video_feats, one.video_feats)


def test_rolling_is_cyclic_and_directional(batch):
    """TTR + frame mean are invariant to a cyclic shift of the frames but not to reversing them."""
    model = zero_temporal(tiny())
    video, ids, mask = batch
    with torch.no_grad():
        base = model.joint(video, ids, mask).cls_feats
        shifted = model.joint(video.roll(1, dims=1), ids, mask).cls_feats
        reversed_ = model.joint(video.flip(1), ids, mask).cls_feats
    torch.testing.assert_close(shifted, base)
    assert (reversed_ - base).abs().max() > 1e-3


def test_padded_text_tokens_are_invisible(batch):
    model = tiny()
    video, ids, mask = batch
    other = ids.clone()
    other[1, 5:] = 7  # change what sits under the padding
    with torch.no_grad():
        a, b = model.joint(video, ids, mask), model.joint(video, other, mask)
        short = model.joint(video[1:], ids[1:, :5], mask[1:, :5])  # the same text without padding
    torch.testing.assert_close(a.cls_feats, b.cls_feats)
    torch.testing.assert_close(a.video_feats, b.video_feats)
    torch.testing.assert_close(a.cls_feats[1:], short.cls_feats)
    torch.testing.assert_close(a.text_feats[1:, :5], short.text_feats)


def test_rank_output_is_the_match_logit_and_the_mlm_head_is_untied(batch):
    model = tiny()
    video, ids, mask = batch
    with torch.no_grad():
        joint = model.joint(video, ids, mask)
        torch.testing.assert_close(model.rank_output(joint.cls_feats)[:, 0], model.vtm_logits(joint)[:, 1])
        torch.testing.assert_close(model.vtm_score(video, ids, mask), model.vtm_logits(joint)[:, 1])
        torch.testing.assert_close(model.vtm_probability(video, ids, mask), model.vtm_logits(joint).softmax(-1)[:, 1])
    assert model.mlm_logits(joint.text_feats).shape == (2, 8, 1000)
    assert model.mlm_score.decoder.weight.data_ptr() != model.text_embeddings.word_embeddings.weight.data_ptr()


def test_sdpa_and_reference_attention_agree(batch):
    model = tiny()
    video, ids, mask = batch
    with torch.no_grad():
        fast = model.joint(video, ids, mask).cls_feats
        model.set_attention_impl("reference")
        torch.testing.assert_close(model.joint(video, ids, mask).cls_feats, fast, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- single modalities
def test_text_only_equals_the_mean_of_its_repeats_and_ignores_padding(batch):
    model = tiny("allinone-test-vtc")
    _, ids, mask = batch
    with torch.no_grad():
        one = model.text_features(ids, mask)
        x = model.embed_text(ids).repeat_interleave(3, dim=0)  # the release: T copies, no video, averaged
        from egovlp.models.layers import additive_mask

        rep = model.run_blocks(x, additive_mask(mask.repeat_interleave(3, dim=0), x.dtype), 0, None)
        torch.testing.assert_close(one, rep.view(2, 3, 8, -1).mean(1))
        short = model.encode_text(ids[1:, :5], mask[1:, :5])
        torch.testing.assert_close(model.encode_text(ids, mask)[1:], short)
    assert model.encode_text(ids, mask, normalize=True).norm(dim=-1).allclose(torch.ones(2))
    assert model.encode_text(ids, mask).shape == (2, 32)


def test_video_only_is_the_mean_of_independent_frames_without_rolling(batch):
    model = zero_temporal(tiny("allinone-test-vtc"))
    video = batch[0]
    with torch.no_grad():
        whole = model.video_features(video)
        per_frame = torch.stack([model.video_features(video[:, t : t + 1]) for t in range(3)], 1).mean(1)
        torch.testing.assert_close(whole, per_frame)  # frames never meet: no TTR in the video-only pass
        perm = model.video_features(video[:, [2, 0, 1]][:, [1, 0, 2]])  # any order, not just cyclic shifts
        torch.testing.assert_close(perm, whole)
        torch.testing.assert_close(model.encode_video(video), model.vid_proj(whole[:, 0]))


def test_the_distilled_variant_rolls_its_dist_token_and_ignores_the_temporal_embedding(batch):
    model = tiny("allinone-test-distilled")
    assert model.transformer.pos_embed.shape == (1, 18, 64) and model.transformer.dist_token.shape == (1, 1, 64)
    video, ids, mask = batch
    with torch.no_grad():
        before = model.joint(video, ids, mask).cls_feats
        model.transformer.temporal_embed.normal_()
        torch.testing.assert_close(model.joint(video, ids, mask).cls_feats, before)
    assert roll_fold(18) == 2  # indices 1..2 (dist_token and the first patch) roll forward


# ----------------------------------------------------------------------------------------------------- patch order
def test_raster_order_is_deterministic_and_a_seeded_shuffle_reproducible(batch):
    model = tiny()
    video, ids, mask = batch

    def run(generator=None):
        with torch.no_grad():
            return model.joint(video, ids, mask, generator=generator).cls_feats

    torch.testing.assert_close(run(), run())
    a, b = run(torch.Generator().manual_seed(7)), run(torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert (run(torch.Generator().manual_seed(8)) - a).abs().max() > 1e-4
    assert (a - run()).abs().max() > 1e-4  # which patches TTR exchanges depends on the order


def test_with_one_frame_the_order_does_not_matter(batch):
    """Positions travel with the tokens and attention is permutation-equivariant: only TTR sees the order."""
    model = tiny()
    video, ids, mask = batch
    with torch.no_grad():
        raster = model.joint(video[:, :1], ids, mask).cls_feats
        shuffled = model.joint(video[:, :1], ids, mask, generator=torch.Generator().manual_seed(1)).cls_feats
    torch.testing.assert_close(shuffled, raster, rtol=1e-4, atol=1e-5)


def test_the_release_mode_draws_a_new_order_per_call_from_the_seeded_model_generator(batch):
    cfg = get_model_config("allinone-test")
    shuffle = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, patch_order="shuffle", patch_seed=4))
    video, ids, mask = batch

    def two_calls():
        torch.manual_seed(0)
        model = randomise_(AllInOne(shuffle), 0.3).eval()
        with torch.no_grad():
            return model.joint(video, ids, mask).cls_feats, model.joint(video, ids, mask).cls_feats

    first, second = two_calls()
    assert (first - second).abs().max() > 1e-4  # as the release: each call differs
    again = two_calls()
    torch.testing.assert_close(again[0], first)
    torch.testing.assert_close(again[1], second)
    with pytest.raises(ConfigError, match="patch_order"):
        dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, patch_order="random"))


# ------------------------------------------------------------------------------------------------- sizes, frames
def test_parameter_counts_of_the_release(capsys):
    """families.md §4a: B 133.9 M with the MLM head, 109.9 M without (README 110 M); S 45.5 M; Ti 17.4 M."""
    table = get_family("allinone").parameter_table
    base = table(get_model_config("allinone-base"))
    assert base["total"] == 133_932_860 and base["total w/o MLM"] == 109_869_314
    assert base["MLM head"] == 768 * 768 + 768 + 2 * 768 + 30522 * 768 + 30522
    assert round(table(get_model_config("allinone-small"))["total"] / 1e6, 1) == 45.5
    assert round(table(get_model_config("allinone-tiny"))["total"] / 1e6, 1) == 17.4
    assert table(get_model_config("allinone-base-vtc"))["projections"] == 2 * (768 * 512 + 512)
    assert main(["info", "allinone-base", "--text-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "109.87" in out and "133.93" in out and "joint" in out and "video only" in out


def test_joint_gmacs_are_the_frames_times_one_frame_row():
    """The joint pass is T independent rows of (text + frame) tokens: T x the MACs of one frame's row, less the
    pooler that runs once on the frame mean (768 x 768 MACs)."""
    macs = get_family("allinone").mac_table
    cfg = get_model_config("allinone-base")
    one, three = macs(cfg, 1, 40)["joint"], macs(cfg, 3, 40)["joint"]
    assert three == pytest.approx(3 * one - 2 * 768 * 768 / 1e9, rel=1e-9)
    assert 60 < three < 70  # 3 x 237 tokens through ViT-B


def test_more_frames_through_an_interpolated_temporal_embedding(batch):
    model = tiny()
    video, ids, mask = batch
    longer = torch.cat((video, video[:, :2]), dim=1)  # 5 frames, the embedding has 3 rows
    with pytest.raises(ValueError, match="temporal embedding has 3 rows"):
        model.joint(longer, ids, mask)
    trained = model.transformer.temporal_embed
    with torch.no_grad(), model.frames(5):
        assert model.joint(longer, ids, mask).cls_feats.shape == (2, 64)
    assert model.transformer.temporal_embed is trained
    model.resize_temporal_embed(5)
    assert model.transformer.temporal_embed.shape == (1, 5, 64)


def test_configs_and_misuse_are_reported():
    assert isinstance(create_model("allinone-test"), AllInOne)
    with pytest.raises(ConfigError, match="divisible"):
        AllInOneConfig(width=100, num_heads=12)
    model = tiny(mlm_head=False)
    with pytest.raises(RuntimeError, match="no mlm_score head"):
        model.mlm_logits(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="longer than the 40 positions"):
        model.text_features(torch.zeros(1, 41, dtype=torch.long), torch.ones(1, 41))


def test_text_embeddings_match_huggingface_bert_embeddings():
    """Parity with transformers' BertEmbeddings (the release's text side), under the same parameter names."""
    transformers = pytest.importorskip("transformers")
    from egovlp.models.allinone_config import AioTextConfig
    from egovlp.models.allinone_layers import BertEmbeddings

    ours = randomise_(BertEmbeddings(AioTextConfig(vocab_size=100), 16, 0.0)).eval()
    config = transformers.BertConfig(vocab_size=100, hidden_size=16, max_position_embeddings=40, type_vocab_size=2,
                                     layer_norm_eps=1e-12, hidden_dropout_prob=0.0, pad_token_id=0)  # fmt: skip
    theirs = transformers.models.bert.modeling_bert.BertEmbeddings(config).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"position_ids", "token_type_ids"}
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(input_ids=ids))

"""The "allinone" model family: All-in-one B / S / Ti, tiny test variants, sizes, and conversion of the release.

Architectures (families.md §4a): ``allinone-base`` (ViT-B/16, 768 wide, 12 heads), ``allinone-small`` (DeiT-S
distilled: 384 wide, 6 heads, a ``dist_token``, no temporal embedding added), ``allinone-tiny`` (DeiT-Ti: 192 wide,
3 heads); all 12 blocks, 3 frames, 40 text positions; ``allinone-base-vtc`` adds the 512-d contrastive projections
of the fast-retrieval fine-tunes. ``allinone-test*`` are tiny random-weight variants for tests.

Released checkpoints (``egovlp convert``) are PyTorch-Lightning ``.ckpt`` files: ``state_dict`` (no ``module.``
prefix) beside ``hyper_parameters`` (a dict subclass holding the sacred config, read inert by the restricted
unpickler), optimizer states and callbacks. Conversion (:func:`convert_state`): drops transformers 4.x's
``text_embeddings.position_ids`` buffer and any Lightning metric state (``train_*`` / ``val_*`` / ``test_*``), reads
the B+ (CoTraining) head name ``vtm_score`` as ``itm_score``, folds the fine-tunes' ``rank_output`` (the match row
of ``itm_score.fc``, shared storage) back into that row, leaves out the VQA / multiple-choice / VCOP classifiers
(no egovlp task uses them; logged) and resizes the temporal embedding. Everything else must match exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import torch
from torch import nn

from egovlp.errors import CheckpointError
from egovlp.models.allinone_config import FAMILY, AioTextConfig, AioVideoConfig, AllInOneConfig
from egovlp.models.registry import ModelFamily, register_family, register_model

log = logging.getLogger(__name__)

TEMPORAL_KEY = "transformer.temporal_embed"
DROPPED_KEYS = ("text_embeddings.position_ids",)
#: fine-tuned task heads of the release that egovlp does not use
RELEASE_TASK_HEADS = ("vqa_classifier.", "mc_vqa_classifier.", "vcop_classifier.")
_METRIC_STATE = re.compile(r"^(train|val|test)_")


def build(cfg: AllInOneConfig) -> nn.Module:
    from egovlp.models.allinone_model import AllInOne

    return AllInOne(cfg)


# ---------------------------------------------------------------------------------------------------- sizes
def parameter_part(name: str) -> str:
    if name.startswith(("text_embeddings.", "token_type_embeddings.")):
        return "text embeddings"
    if name.startswith("transformer."):
        return "transformer"
    if name.startswith("mlm_score."):
        return "MLM head"
    if name.startswith(("txt_proj.", "vid_proj.")):
        return "projections"
    return "VTM head"  # pooler + itm_score


def parameter_table(cfg: AllInOneConfig) -> dict[str, int]:
    """Parameters per part, ``total`` and ``total w/o MLM`` (the README's count; B: 109.9 M)."""
    with torch.device("meta"):
        model = build(cfg)
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = parameter_part(name)
        counts[part] = counts.get(part, 0) + p.numel()
    counts["total"] = sum(counts.values())
    counts["total w/o MLM"] = counts["total"] - counts.get("MLM head", 0)
    return counts


def mac_table(cfg: AllInOneConfig, num_frames: int | None, text_tokens: int) -> dict[str, float]:
    """GMACs (batch 1) of the joint pass (T frames x (text + frame tokens), what one VTM score costs), the
    video-only and the text-only passes (explicit attention on meta tensors; heads excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    frames = num_frames or cfg.video.num_frames
    text_tokens = min(text_tokens, cfg.text.max_positions)
    from egovlp.models.allinone_model import AllInOne

    with torch.device("meta"):
        model = AllInOne(dataclasses.replace(cfg, attn_impl="reference")).eval()
    size = cfg.video.img_size
    video = torch.empty(1, frames, 3, size, size, device="meta")
    ids = torch.zeros(1, text_tokens, dtype=torch.long, device="meta")
    mask = torch.ones(1, text_tokens, dtype=torch.long, device="meta")

    def gmacs(fn) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, model.frames(frames):
            fn()
        return counter.get_total_flops() / 2e9

    return {
        "joint": gmacs(lambda: model.joint(video, ids, mask)),
        "video only": gmacs(lambda: model.video_features(video)),
        "text only": gmacs(lambda: model.text_features(ids, mask)),
    }


# ------------------------------------------------------------------------------------------ official checkpoints
def recognises(state: dict) -> bool:
    """All-in-one keys: BERT text embeddings feeding a ``transformer.*`` ViT with a temporal embedding."""
    return TEMPORAL_KEY in state and "text_embeddings.word_embeddings.weight" in state


def official_config(state: dict[str, torch.Tensor]) -> AllInOneConfig:
    """The config of an official All-in-one state dict, read off its keys and shapes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"not an All-in-one state dict: key {key!r} is missing")
        return tuple(state[key].shape)

    width = shape("transformer.norm.weight")[0]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.blocks."))
    distilled = "transformer.dist_token" in state
    patch = shape("transformer.patch_embed.proj.weight")[-1]
    prefix = 2 if distilled else 1
    grid = round((shape("transformer.pos_embed")[1] - prefix) ** 0.5)
    vocab, _ = shape("text_embeddings.word_embeddings.weight")
    video = AioVideoConfig(img_size=grid * patch, patch_size=patch, num_frames=shape(TEMPORAL_KEY)[1],
                           distilled=distilled)  # fmt: skip
    text = AioTextConfig(vocab_size=vocab, max_positions=shape("text_embeddings.position_embeddings.weight")[0])
    embed_dim = shape("txt_proj.weight")[0] if "txt_proj.weight" in state else 0
    arch = {768: "allinone-base", 384: "allinone-small", 192: "allinone-tiny"}.get(width, "allinone-base")
    if arch == "allinone-base" and embed_dim:
        arch = "allinone-base-vtc"
    return AllInOneConfig(
        arch=arch,
        video=video,
        text=text,
        width=width,
        depth=depth,
        num_heads=max(width // 64, 1),
        mlp_ratio=shape("transformer.blocks.0.mlp.fc1.weight")[0] / width,
        mlm_head="mlm_score.decoder.weight" in state,
        vtm_head="itm_score.fc.weight" in state or "vtm_score.fc.weight" in state,
        embed_dim=embed_dim,
    )


def convert_state(state: dict[str, torch.Tensor], cfg: AllInOneConfig) -> dict[str, torch.Tensor]:
    """Official state dict -> ours for ``cfg`` (see the module docstring); the strict load checks the rest."""
    from egovlp.models.convert import strip_prefix
    from egovlp.models.video import resize_temporal_embed

    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in strip_prefix(state).items():
        if key in DROPPED_KEYS or _METRIC_STATE.match(key):
            continue
        if key.startswith(RELEASE_TASK_HEADS):
            dropped.append(key)
            continue
        if key.startswith("vtm_score."):
            key = "itm_score." + key[len("vtm_score.") :]
        out[key] = value
    if dropped:
        log.warning("left out the release's task heads (not used by egovlp): %s", ", ".join(sorted(dropped)))
    _fold_rank_output(out)
    old = out.get(TEMPORAL_KEY)
    frames = cfg.video.num_frames
    if old is not None and old.ndim == 3 and old.shape[1] != frames:
        out[TEMPORAL_KEY] = resize_temporal_embed(old, frames)
        log.info("temporal embedding resized from %d to %d frames", old.shape[1], frames)
    return out


def _fold_rank_output(state: dict[str, torch.Tensor]) -> None:
    """``rank_output.{weight,bias}`` (1, D) / (1,) is the release's view of ``itm_score.fc`` row 1: drop it, after
    checking it against that row (it wins, with a warning, if a file disagrees: it is what the release scored)."""
    if "rank_output.weight" not in state and "rank_output.bias" not in state:
        return
    weight, bias = state.pop("rank_output.weight", None), state.pop("rank_output.bias", None)
    if weight is None or bias is None:
        raise CheckpointError("the checkpoint has only one of rank_output.weight / rank_output.bias")
    if "itm_score.fc.weight" not in state:
        raise CheckpointError("the checkpoint has rank_output.* but no itm_score.fc.* (its match row)")
    fc_w, fc_b = state["itm_score.fc.weight"], state["itm_score.fc.bias"]
    if weight.device.type == "meta" or (torch.equal(weight, fc_w[1:]) and torch.equal(bias, fc_b[1:])):
        return
    log.warning("rank_output differs from the match row of itm_score.fc; using rank_output for that row")
    state["itm_score.fc.weight"] = torch.cat((fc_w[:1], weight.to(fc_w.dtype)))
    state["itm_score.fc.bias"] = torch.cat((fc_b[:1], bias.to(fc_b.dtype)))


ALLINONE = register_family(
    ModelFamily(
        name=FAMILY,
        description="All-in-one: one ViT over [text ; frame] per frame, temporal token rolling, VTM + MLM heads",
        config_type=AllInOneConfig,
        build=build,
        parameter_table=parameter_table,
        mac_table=mac_table,
        recognises=recognises,
        official_config=official_config,
        convert_state=convert_state,
    )
)


# ------------------------------------------------------------------------------------------------ released models
@register_model("allinone-base", "All-in-one-B (all-in-one-base.ckpt): ViT-B/16, 768 wide, 3 frames, VTM + MLM")
def allinone_base() -> AllInOneConfig:
    return AllInOneConfig()


@register_model("allinone-small", "All-in-one-S: DeiT-S distilled (384 wide, 6 heads, dist_token), 3 frames")
def allinone_small() -> AllInOneConfig:
    return AllInOneConfig(width=384, num_heads=6, video=AioVideoConfig(distilled=True))


@register_model("allinone-tiny", "All-in-one-Ti: DeiT-Ti (192 wide, 3 heads), 3 frames")
def allinone_tiny() -> AllInOneConfig:
    return AllInOneConfig(width=192, num_heads=3)


@register_model("allinone-base-vtc", "All-in-one-B with the 512-d contrastive projections (fast-retrieval fine-tunes)")
def allinone_base_vtc() -> AllInOneConfig:
    return AllInOneConfig(embed_dim=512)


# --------------------------------------------------------------------------------------------- tiny test variants
def _test(**kw) -> AllInOneConfig:
    video = AioVideoConfig(img_size=32, patch_size=8, num_frames=3, distilled=kw.pop("distilled", False))
    text = AioTextConfig(vocab_size=1000)
    return AllInOneConfig(video=video, text=text, width=64, depth=2, num_heads=4, init_std=0.1, **kw)


@register_model("allinone-test", "tiny random-weight All-in-one for tests: 32 px, patch 8, width 64, 2 blocks")
def allinone_test() -> AllInOneConfig:
    return _test()


@register_model("allinone-test-distilled", "tiny All-in-one with the DeiT-S dist_token (as allinone-small)")
def allinone_test_distilled() -> AllInOneConfig:
    return _test(distilled=True)


@register_model("allinone-test-vtc", "tiny All-in-one with 32-d contrastive projections")
def allinone_test_vtc() -> AllInOneConfig:
    return _test(embed_dim=32)

"""OA-Trans object-aware pre-training: the ``oa_trans`` objective of ``egovlp pretrain`` (``loss.objective=oa_trans``).

The model is a plain dual encoder (the frozen family's layout, families.md §3a): the object streams reuse its towers
and projections and exist only here, at pre-training; the saved weights are the dual encoder's, for every task. The
global-local variant adds two small training-only heads (``vid_local_proj``, ``text_local_proj``), kept in the
training checkpoints and never in ``model.safetensors``.

Settings live in the ``oa`` section of the pre-training config (:class:`OAConfig`); the data is the EgoClip items
plus the user's detections (:mod:`egovlp.data.detections`, :mod:`egovlp.data.oa_clips`); the losses are
:mod:`egovlp.losses.oa`.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from egovlp.data.detections import open_detections
from egovlp.data.oa_clips import ObjectAwareClips, ObjectCollate
from egovlp.errors import ConfigError
from egovlp.losses import GatherGrad, all_gather, all_gather_nograd
from egovlp.losses.egonce import Positives
from egovlp.losses.oa import (
    masked_nce,
    mean_over_objects,
    oa_four_stream_loss,
    object_region_features,
    tag_span_features,
)
from egovlp.tasks.objectives import OAConfig, Objective, register_objective
from egovlp.train.task import TaskModule

__all__ = ["OAConfig", "OAModule"]  # OAConfig lives in egovlp.tasks.objectives (PretrainConfig embeds it)


class OAModule(TaskModule):
    """``forward(batch) -> {"loss", "video_text", ...}``: the OA-Trans objective on one local batch.

    The batch is :class:`~egovlp.data.oa_clips.ObjectCollate`'s. Embeddings are all-gathered (``gather_grad``) and
    the flags / tags without gradient, so the loss is the global batch's.
    """

    def __init__(self, model: nn.Module, cfg: OAConfig, temperature: float, gather_grad: str) -> None:
        super().__init__(model)
        if not (hasattr(model, "encode_video") and hasattr(model, "video_model") and hasattr(model, "text_model")):
            raise ConfigError("loss.objective=oa_trans needs a dual encoder with a TimeSformer video tower")
        self.cfg, self.temperature, self.gather_grad = cfg, temperature, GatherGrad(gather_grad)
        mcfg: Any = model.cfg
        self.has_unused_parameters = bool(mcfg.has_fusion)
        if cfg.variant == "global_local":
            self.vid_local_proj = nn.Sequential(nn.Linear(mcfg.video.width, mcfg.embed_dim))
            self.text_local_proj = nn.Sequential(nn.ReLU(), nn.Linear(mcfg.text.width, mcfg.embed_dim))

    def _gather(self, x: Tensor) -> Tensor:
        return all_gather(x, self.gather_grad)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        model: Any = self.model
        cfg = self.cfg
        video = model.encode_video(batch["video"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        has = all_gather_nograd(batch["has_objects"])
        positives = cast(Positives, cfg.video_text_positives)
        verb = all_gather_nograd(batch["verb"]) if positives != "none" else None
        noun = all_gather_nograd(batch["noun"]) if positives != "none" else None
        if cfg.variant == "four_stream":
            tags = model.encode_text(batch["tag_input_ids"], batch["tag_attention_mask"])
            anchor = model.encode_video(batch["anchor"][:, None])  # (B, E): a one-frame clip
            weights = (cfg.video_text_weight, cfg.video_tags_weight, cfg.anchor_text_weight)
            g = self._gather
            out = oa_four_stream_loss(
                g(video), g(text), g(tags), g(anchor), has, weights, self.temperature, verb, noun, positives
            )
            return {"loss": out.loss, **out.terms}
        return self._global_local(batch, video, text, has, verb, noun, positives)

    def _global_local(self, batch: dict, video, text, has, verb, noun, positives: Positives) -> dict[str, Tensor]:
        from egovlp.losses import egonce_loss

        model: Any = self.model
        cfg, g, tau = self.cfg, self._gather, self.temperature
        states = model.text_model(batch["caption_tag_ids"], batch["caption_tag_mask"])  # (B, L, Dt)
        caption_tags = model.txt_proj(states[:, 0])
        tag_feat = self.text_local_proj(tag_span_features(states, batch["tag_spans"]))  # (B, K, E)
        vm = model.video_model
        patches = vm.norm(vm.forward_features(batch["anchor_full"][:, None]))[:, 1:]  # (B, P, Dv) of the anchor
        region = self.vid_local_proj(object_region_features(patches, batch["object_masks"]))  # (B, K, E)
        valid = batch["object_valid"]
        vt = egonce_loss(g(text), g(video), verb, noun, tau, positives).loss
        ct = egonce_loss(g(caption_tags), g(video), verb, noun, tau, positives).loss
        rg = masked_nce(g(mean_over_objects(tag_feat, valid)), g(mean_over_objects(region, valid)), has, tau)
        loss = cfg.video_text_weight * vt + cfg.caption_tags_weight * ct + cfg.region_weight * rg
        return {"loss": loss, "video_text": vt, "caption_tags": ct, "region": rg}


# ------------------------------------------------------------------------------------------------- the objective
def _check(cfg: Any) -> OAConfig:
    oa: OAConfig = cfg.oa
    if not oa.detections:
        raise ConfigError("loss.objective=oa_trans needs oa.detections (a BUTD folder or a detections .json)")
    return oa


def _wrap_dataset(dataset: Any, cfg: Any) -> ObjectAwareClips:
    oa = _check(cfg)
    detections = open_detections(oa.detections, oa.vocab, oa.butd_frames, oa.bad_detections)
    video = cfg.model.video
    full = oa.variant != "four_stream"  # the global-local variant reads the anchor's patches unmasked
    return ObjectAwareClips(dataset, detections, oa.top_k, video.img_size, video.patch_size, keep_unmasked_anchor=full)


def _wrap_collate(collate: Any, cfg: Any, tokenizer: Any) -> ObjectCollate:
    oa = _check(cfg)
    return ObjectCollate(collate, tokenizer, oa.tag_max_length, caption_tags=oa.variant == "global_local")


def _build(model: nn.Module, cfg: Any, tokenizer: Any, seed: int, dist: Any) -> TaskModule:
    return OAModule(model, _check(cfg), cfg.loss.temperature, cfg.loss.gather_grad)


register_objective(
    Objective(
        "oa_trans",
        "OA-Trans: video-text contrast plus object tags and the object-masked anchor frame (pre-training only)",
        _build,
        wrap_dataset=_wrap_dataset,
        wrap_collate=_wrap_collate,
    )
)

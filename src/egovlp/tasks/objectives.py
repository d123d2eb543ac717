"""The pre-training objectives of ``egovlp pretrain``: which losses a model family is trained with.

``loss.objective`` names one; ``"auto"`` (the default) picks the model family's own (:func:`default_objective`)::

    egovlpv2     EgoNCE on the dual pass + MLM + VTM on fused passes      EgoVLPv2 (egovlp.tasks.pretrain)
    egonce       EgoNCE on the dual embeddings (loss.positives)           EgoVLP v1: archs egovlp*
    normsoftmax  symmetric InfoNCE, t2v + v2t summed, tau 0.05            Frozen-in-Time: archs frozen-in-time*
    oa_trans     video-text + object-aware contrast (object streams)      OA-Trans (egovlp.tasks.oa_pretrain)

NormSoftmax is EgoNCE with the positive set reduced to the pair itself (``positives="none"``): the same function,
the same sum of both directions (families.md §1c, §2c). An objective is a small :class:`Objective` record: how to
build the :class:`~egovlp.train.task.TaskModule` and, where it needs more than the EgoClip items, how to extend the
dataset and the collate function. The pre-training task and the command line hold no per-family code; another
family registers its objective here with :func:`register_objective` and its ``auto`` rule in :data:`AUTO_RULES`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor, nn

from egovlp.config import at_least, one_of
from egovlp.errors import ConfigError
from egovlp.losses import EgoNCELoss, GatherGrad
from egovlp.losses.egonce import POSITIVE_MODES, Positives
from egovlp.train.task import TaskModule

__all__ = [
    "AUTO_RULES",
    "DualContrastModule",
    "OAConfig",
    "Objective",
    "default_objective",
    "get_objective",
    "list_objectives",
    "register_objective",
    "resolve_objective",
]


# The config sections of objectives that the pre-training config embeds live here, beside the registry, so that
# egovlp.tasks.pretrain imports no sibling task module.
@dataclass(frozen=True)
class OAConfig:
    """The ``oa`` section of ``egovlp pretrain`` (used with ``loss.objective=oa_trans``)."""

    detections: str = ""  # a BUTD folder (<clip_idx>/<k>.npz) or a .json file (egovlp.data.detections)
    vocab: str = ""  # objects_vocab.txt (VG-1600 for BUTD); needed where labels are class ids
    butd_frames: int = at_least(1, 8)  # BUTD frames per clip (the middles of equal segments; OA-Trans: 8)
    bad_detections: str = one_of(("raise", "skip"), "skip")  # missing frame / bad box / unknown class id
    top_k: int = at_least(1, 10)  # objects of the anchor frame (release: 10, 15 or 20 by variant)
    tag_max_length: int = at_least(2, 24)  # tokens of the tag sentence (twice this for caption + tags)
    variant: str = one_of(("four_stream", "global_local"), "four_stream")  # the paper's | the released code's
    video_text_positives: str = one_of(POSITIVE_MODES, "none")  # none: NormSoftmax (OA-Trans); EgoNCE otherwise
    # weights; the paper's are not public: all 1
    video_text_weight: float = at_least(0, 1.0)
    video_tags_weight: float = at_least(0, 1.0)  # four_stream
    anchor_text_weight: float = at_least(0, 1.0)  # four_stream
    caption_tags_weight: float = at_least(0, 1.0)  # global_local: nce(caption + tags, video)
    region_weight: float = at_least(0, 1.0)  # global_local: nce(mean tag features, mean region features)


#: modules that register further objectives when imported (egovlpv2 registers from egovlp.tasks.pretrain)
OBJECTIVE_MODULES: tuple[str, ...] = ("egovlp.tasks.pretrain", "egovlp.tasks.oa_pretrain")


@dataclass(frozen=True)
class Objective:
    """One pre-training objective.

    Attributes:
        name: the value of ``loss.objective``.
        description: one line for messages and docs.
        build_module: ``(model, cfg: PretrainConfig, tokenizer, seed, dist) -> TaskModule``.
        wrap_dataset: ``(EgoClipDataset, cfg) -> Dataset`` adding what the objective reads (None: as is).
        wrap_collate: ``(EgoClipCollate, cfg, tokenizer) -> collate`` (None: as is).
        uses_mlm: whether the collate must mask narrations for MLM.
    """

    name: str
    description: str
    build_module: Callable[..., TaskModule]
    wrap_dataset: Callable[[Any, Any], Any] | None = None
    wrap_collate: Callable[[Any, Any, Any], Any] | None = None
    uses_mlm: bool = False


_OBJECTIVES: dict[str, Objective] = {}
_loaded = False


def register_objective(objective: Objective) -> Objective:
    _OBJECTIVES[objective.name] = objective
    return objective


def list_objectives() -> dict[str, Objective]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in OBJECTIVE_MODULES:
            importlib.import_module(module)
    return dict(sorted(_OBJECTIVES.items()))


def get_objective(name: str) -> Objective:
    """The objective ``name``; ConfigError naming the known (and closest) ones otherwise."""
    known = list_objectives()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"loss.objective={name!r} is not an objective (known: auto, {', '.join(known)}){hint}")
    return known[name]


def _frozen_rule(model_cfg: Any) -> str:
    # one family, two releases with different losses: EgoVLP (v1) trained with EgoNCE, Frozen-in-Time with NormSoftmax
    return "egonce" if str(model_cfg.arch).startswith("egovlp") else "normsoftmax"


#: family -> ``model config -> objective name`` for ``loss.objective=auto``
AUTO_RULES: dict[str, Callable[[Any], str]] = {"egovlpv2": lambda cfg: "egovlpv2", "frozen": _frozen_rule}


def default_objective(model_cfg: Any) -> str:
    """The objective ``auto`` stands for: the model family's own (see the module docstring)."""
    family = getattr(model_cfg, "family", "")
    if family not in AUTO_RULES:
        raise ConfigError(f"loss.objective=auto: no default objective for model family {family!r}; name one")
    return AUTO_RULES[family](model_cfg)


def resolve_objective(name: str, model_cfg: Any) -> Objective:
    """``loss.objective`` (``auto`` or a name) -> the :class:`Objective` to train ``model_cfg`` with."""
    return get_objective(default_objective(model_cfg) if name == "auto" else name)


# ------------------------------------------------------------------------------------ dual contrastive objectives
class DualContrastModule(TaskModule):
    """``forward(batch) -> {"loss", name}``: EgoNCE (or NormSoftmax: ``positives="none"``) of the dual embeddings.

    The batch holds ``video (B, F, 3, H, W)``, ``input_ids`` / ``attention_mask (B, L)`` and, for EgoNCE positives,
    the ``verb`` / ``noun`` multi-hots. The loss is over the all-gathered batch (``gather_grad``).
    """

    def __init__(
        self, model: nn.Module, temperature: float, positives: str, gather_grad: str, name: str = "egonce"
    ) -> None:
        super().__init__(model)
        self.name = name
        self.nce = EgoNCELoss(temperature, cast(Positives, positives), GatherGrad(gather_grad))
        self.has_unused_parameters = bool(getattr(model.cfg, "has_fusion", False))  # fusion is idle in a dual pass

    def forward(self, batch: dict) -> dict[str, Tensor]:
        model: Any = self.model
        v = model.encode_video(batch["video"])
        t = model.encode_text(batch["input_ids"], batch["attention_mask"])
        loss = self.nce(t, v, batch.get("verb"), batch.get("noun")).loss
        return {"loss": loss, self.name: loss}


def _check_dual(model: nn.Module, objective: str) -> None:
    if not (hasattr(model, "encode_video") and hasattr(model, "encode_text")):
        raise ConfigError(f"loss.objective={objective!r} needs a dual encoder (encode_video / encode_text)")


def _egonce(model: nn.Module, cfg: Any, tokenizer: Any, seed: int, dist: Any) -> TaskModule:
    _check_dual(model, "egonce")
    return DualContrastModule(model, cfg.loss.temperature, cfg.loss.positives, cfg.loss.gather_grad, "egonce")


def _normsoftmax(model: nn.Module, cfg: Any, tokenizer: Any, seed: int, dist: Any) -> TaskModule:
    _check_dual(model, "normsoftmax")
    return DualContrastModule(model, cfg.loss.temperature, "none", cfg.loss.gather_grad, "nce")


register_objective(Objective("egonce", "EgoNCE on the dual embeddings (EgoVLP v1)", _egonce))
register_objective(Objective("normsoftmax", "symmetric InfoNCE, both directions summed (Frozen-in-Time)", _normsoftmax))

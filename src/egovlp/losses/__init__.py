"""Pre-training and fine-tuning losses: pure functions plus thin modules, and the distributed all-gather.

- :mod:`~egovlp.losses.gather`: ``all_gather`` with an explicit gradient choice (:class:`GatherGrad`).
- :mod:`~egovlp.losses.egonce`: EgoNCE (verb/noun positives; verb-only, noun-only, plain InfoNCE).
- :mod:`~egovlp.losses.mlm`: masked language modelling averaged over the global batch's labelled tokens.
- :mod:`~egovlp.losses.vtm`: video-text matching hard-negative sampling and loss.
- :mod:`~egovlp.losses.retrieval`: EK-100 (adaptive) max-margin ranking losses.
"""

from egovlp.losses.egonce import EgoNCELoss, EgoNCEOutput, cosine_similarity_matrix, egonce_loss, positive_mask
from egovlp.losses.gather import GatherGrad, all_gather, all_gather_nograd, world_info
from egovlp.losses.mlm import IGNORE_INDEX, MLMLoss, global_label_count, mlm_loss
from egovlp.losses.retrieval import AdaptiveMaxMarginLoss, MaxMarginLoss, adaptive_max_margin_loss, max_margin_loss
from egovlp.losses.vtm import Replaced, VTMLoss, VTMPairs, sample_vtm_pairs, vtm_loss, vtm_negative_probs

__all__ = [
    "IGNORE_INDEX",
    "AdaptiveMaxMarginLoss",
    "EgoNCELoss",
    "EgoNCEOutput",
    "GatherGrad",
    "MLMLoss",
    "MaxMarginLoss",
    "Replaced",
    "VTMLoss",
    "VTMPairs",
    "adaptive_max_margin_loss",
    "all_gather",
    "all_gather_nograd",
    "cosine_similarity_matrix",
    "egonce_loss",
    "global_label_count",
    "max_margin_loss",
    "mlm_loss",
    "positive_mask",
    "sample_vtm_pairs",
    "vtm_loss",
    "vtm_negative_probs",
    "world_info",
]

"""Benchmark metrics as pure functions on numpy arrays or torch tensors (REFERENCE §4).

- :mod:`~egovlp.metrics.retrieval`: EK-100 MIR mAP / nDCG, R@K and median rank.
- :mod:`~egovlp.metrics.classification`: Charades-Ego multi-label mAP.
- :mod:`~egovlp.metrics.mcq`: EgoMCQ accuracy per question type.
- :mod:`~egovlp.metrics.grounding`: NLQ recall at temporal IoU thresholds.
- :mod:`~egovlp.metrics.reference`: slow loop implementations the fast ones are tested against.
"""

from .classification import MultiLabelMAP, charades_map
from .grounding import GroundingRecall, nlq_recall, temporal_iou
from .mcq import MCQAccuracy, egomcq_accuracy
from .retrieval import MIRMetrics, RecallMetrics, epic_mir_metrics, mir_per_query, rank_order, recall_at_k

__all__ = [
    "GroundingRecall",
    "MCQAccuracy",
    "MIRMetrics",
    "MultiLabelMAP",
    "RecallMetrics",
    "charades_map",
    "egomcq_accuracy",
    "epic_mir_metrics",
    "mir_per_query",
    "nlq_recall",
    "rank_order",
    "recall_at_k",
    "temporal_iou",
]

"""Benchmark metrics as pure functions on numpy arrays or torch tensors (REFERENCE §4).

- :mod:`~egovlp.metrics.retrieval`: EK-100 MIR mAP / nDCG, R@K and median rank.
- :mod:`~egovlp.metrics.classification`: Charades-Ego multi-label mAP.
- :mod:`~egovlp.metrics.mcq`: EgoMCQ accuracy per question type.
- :mod:`~egovlp.metrics.grounding`: NLQ recall at temporal IoU thresholds.
- :mod:`~egovlp.metrics.detection`: Ego4D MQ detection mAP and retrieval Recall@kx.
- :mod:`~egovlp.metrics.summarization`: QFVS semantic-matching precision / recall / F1.
- :mod:`~egovlp.metrics.qa`: EgoTaskQA accuracy per reasoning type and answer type.
- :mod:`~egovlp.metrics.reference`, :mod:`~egovlp.metrics.reference_detection`: slow loop implementations the fast
  ones are tested against.
"""

from .classification import MultiLabelMAP, charades_map
from .detection import (
    DetectionMAP,
    MomentRecall,
    Moments,
    MQMetrics,
    detection_map,
    moment_recall,
    mq_metrics,
    segment_iou,
)
from .grounding import GroundingRecall, nlq_recall, temporal_iou
from .mcq import MCQAccuracy, egomcq_accuracy
from .qa import QAAccuracy, TypeAccuracy, egotaskqa_accuracy
from .retrieval import MIRMetrics, RecallMetrics, epic_mir_metrics, mir_per_query, rank_order, recall_at_k
from .summarization import QFVSMetrics, SummaryScore, concept_iou, machine_summary, qfvs_metrics, semantic_matching

__all__ = [
    "DetectionMAP",
    "GroundingRecall",
    "MCQAccuracy",
    "MIRMetrics",
    "MQMetrics",
    "MomentRecall",
    "Moments",
    "MultiLabelMAP",
    "QAAccuracy",
    "QFVSMetrics",
    "RecallMetrics",
    "SummaryScore",
    "TypeAccuracy",
    "charades_map",
    "concept_iou",
    "detection_map",
    "egomcq_accuracy",
    "egotaskqa_accuracy",
    "epic_mir_metrics",
    "machine_summary",
    "mir_per_query",
    "moment_recall",
    "mq_metrics",
    "nlq_recall",
    "qfvs_metrics",
    "rank_order",
    "recall_at_k",
    "segment_iou",
    "semantic_matching",
    "temporal_iou",
]

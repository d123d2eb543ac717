"""Feature extraction for downstream heads (Ego4D NLQ / MQ and the like): sliding windows over videos, dual video,
dual text and fused features, one file per video or clip with a manifest, resumable and rank-sharded.

``egovlp extract`` is the command; :func:`extract_features` the library entry point; :func:`read_features` reads a
file back. See ``docs/features.md``.
"""

from egovlp.features.config import (
    MODES,
    ExtractConfig,
    FusedFeatureConfig,
    TextFeatureConfig,
    VideoFeatureConfig,
)
from egovlp.features.ids import check_id
from egovlp.features.run import ExtractResult, collect_run_inputs, extract_features, feature_settings
from egovlp.features.sources import Collection, Item, Query, SourceConfig, VideoRef, collect_inputs, collect_items
from egovlp.features.store import FeatureFile, read_features, read_manifest
from egovlp.features.windows import WindowConfig, WindowPlan, count_windows, plan_windows, window_seconds

__all__ = [
    "MODES",
    "Collection",
    "ExtractConfig",
    "ExtractResult",
    "FeatureFile",
    "FusedFeatureConfig",
    "Item",
    "Query",
    "SourceConfig",
    "TextFeatureConfig",
    "VideoFeatureConfig",
    "VideoRef",
    "WindowConfig",
    "WindowPlan",
    "check_id",
    "collect_inputs",
    "collect_items",
    "collect_run_inputs",
    "count_windows",
    "extract_features",
    "feature_settings",
    "plan_windows",
    "read_features",
    "read_manifest",
    "window_seconds",
]

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
from egovlp.features.run import ExtractResult, extract_features, feature_settings
from egovlp.features.sources import Item, Query, SourceConfig, VideoRef, collect_items
from egovlp.features.store import FeatureFile, read_features, read_manifest
from egovlp.features.windows import WindowConfig, WindowPlan, count_windows, plan_windows, window_seconds

__all__ = [
    "MODES",
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
    "collect_items",
    "count_windows",
    "extract_features",
    "feature_settings",
    "plan_windows",
    "read_features",
    "read_manifest",
    "window_seconds",
]

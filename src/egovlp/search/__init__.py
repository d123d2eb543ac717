"""Search your own videos: sliding-window dual video embeddings in a FAISS index, text queries, fusion re-ranking.

``egovlp index`` builds an index folder (:func:`build_index`), ``egovlp search`` queries it (:class:`Searcher`);
:class:`VideoIndex` opens a finished folder. Layout of an index folder::

    manifest.json          settings (checkpoint fingerprint, arch, window settings), FAISS parameters, the videos
    windows.npz            video (N,) int32, start (N,), end (N,) seconds: the index's rows
    index.faiss            the N normalised window embeddings (inner product)
    embeddings/<id>.npz    one video's embeddings (n, E), start, end (its presence: the video is done)
    thumbs/<id>/<k>.jpg    the middle frame of window k (k zero-padded to 6 digits)
"""

from egovlp.search.build import IndexResult, build_index, index_settings
from egovlp.search.config import INDEX_KINDS, AnnConfig, IndexConfig, MergeConfig, default_window
from egovlp.search.index import IndexedVideo, VideoIndex, Window
from egovlp.search.inputs import collect_videos, video_id
from egovlp.search.merge import Group, merge_windows, rerank_order
from egovlp.search.searcher import Moment, RankedWindows, Searcher, supports_rerank

__all__ = [
    "INDEX_KINDS",
    "AnnConfig",
    "Group",
    "IndexConfig",
    "IndexResult",
    "IndexedVideo",
    "MergeConfig",
    "Moment",
    "RankedWindows",
    "Searcher",
    "VideoIndex",
    "Window",
    "build_index",
    "collect_videos",
    "default_window",
    "index_settings",
    "merge_windows",
    "rerank_order",
    "supports_rerank",
    "video_id",
]

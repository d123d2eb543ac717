"""Text queries against an index: dual retrieval, optional fusion re-ranking, moments from neighbouring windows.

``search(query, top_k, rerank=K)``:

1. the query's dual text embedding ``encode_text(normalize=True)`` ``(1, E)`` scores the windows by cosine similarity
   through the FAISS index (exact or approximate);
2. with ``K > 0`` the first ``K`` windows are re-scored by the fusion encoder, ``P(match) = vtm_probability(window,
   query)``, and re-ordered among themselves (EgoVLPv2's dual/fusion switch as retrieve-then-rerank); windows after
   the first ``K`` keep their places;
3. the ranked windows are merged into moments (:func:`~egovlp.search.merge.merge_windows`) and the first ``top_k``
   are returned.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.data.transforms import eval_transform
from egovlp.errors import ConfigError
from egovlp.features.sources import read_frames
from egovlp.search.config import MergeConfig
from egovlp.search.index import VideoIndex
from egovlp.search.merge import merge_windows, rerank_order

log = logging.getLogger(__name__)

__all__ = ["Moment", "RankedWindows", "Searcher", "supports_rerank"]


@dataclass(frozen=True)
class Moment:
    """One result: a span of a video made of one or more neighbouring windows."""

    rank: int  # 1-based
    video: str  # the video's id in the index
    source: str  # its file (or <root>/<uid> folder of a chunked video)
    kind: str  # "file" | "chunked"
    start: float  # seconds
    end: float  # seconds
    score: float  # the ranking score: VTM probability when re-ranked, else the cosine similarity (best window)
    similarity: float  # cosine similarity of the best window
    vtm: float | None  # VTM probability of the best window (None when it was not re-ranked)
    window_ids: tuple[int, ...]  # index rows merged into this moment, best first
    thumbnail: str  # the best window's JPEG, relative to the index folder

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window_ids"] = list(self.window_ids)
        return d


@dataclass
class RankedWindows:
    """Windows in ranked order: ``ids``, ``similarity`` ``(N,)`` and ``vtm`` (NaN where not re-ranked)."""

    ids: np.ndarray
    similarity: np.ndarray
    vtm: np.ndarray = field(default_factory=lambda: np.zeros(0))


def supports_rerank(model: Any) -> bool:
    """Whether ``model`` has a fusion encoder with a VTM head (EgoVLPv2 with fusion layers)."""
    return callable(getattr(model, "vtm_probability", None)) and bool(getattr(model.cfg, "has_fusion", False))


class Searcher:
    """Searches ``index`` with ``model`` (the one that built it) and ``tokenizer``."""

    def __init__(
        self,
        index: VideoIndex,
        model: Any,
        tokenizer: Any,
        device: torch.device | str = "cpu",
        merge: MergeConfig | None = None,
        max_length: int = 32,
        batch_size: int = 8,
    ) -> None:
        self.index, self.model, self.tokenizer = index, model.eval(), tokenizer
        self.device = torch.device(device)
        self.merge = merge or MergeConfig()
        self.merge.validate()
        self.max_length, self.batch_size = max_length, batch_size
        want = index.manifest["settings"]["model"]
        have = (getattr(model.cfg, "arch", ""), int(model.cfg.embed_dim))
        if have != (want.get("arch", ""), int(want["embed_dim"])):
            raise ConfigError(
                f"{index.root}: the index was built with {want.get('arch')!r} ({want['embed_dim']}-d embeddings, "
                f"{want.get('name')}); this model is {have[0]!r} ({have[1]}-d): search with the index's checkpoint"
            )

    @classmethod
    def from_index(
        cls,
        index: VideoIndex,
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        device: torch.device | str = "cpu",
        merge: MergeConfig | None = None,
    ) -> Searcher:
        """A searcher with the checkpoint and tokenizer recorded in the index (or the ones given)."""
        from egovlp.data.tokenizer import Tokenizer
        from egovlp.models.weights import load_model

        ckpt = checkpoint or index.checkpoint
        tok = tokenizer or index.tokenizer
        if not tok:
            raise ConfigError(f"{index.root}: no tokenizer recorded in the index; give --tokenizer DIR")
        if not Path(ckpt).is_file():
            raise ConfigError(f"checkpoint {ckpt} (recorded in {index.root}) is not there; give --checkpoint W")
        recorded = index.manifest["settings"]["model"].get("bytes")
        if recorded is not None and Path(ckpt).stat().st_size != recorded:
            raise ConfigError(
                f"{ckpt} is not the checkpoint that built {index.root} ({recorded} bytes, "
                f"{index.manifest['settings']['model'].get('name')}): query and video embeddings must come from "
                "one model"
            )
        model = load_model(ckpt, num_frames=index.num_frames, device=device)
        return cls(index, model, Tokenizer.from_dir(tok), device, merge)

    # ------------------------------------------------------------------------------------------------ text
    def _tokens(self, query: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not query.strip():
            raise ConfigError("empty query: give some words to search for")
        enc = self.tokenizer([query], max_length=self.max_length)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def embed_query(self, query: str) -> np.ndarray:
        """The query's normalised dual text embedding ``(E,)`` float32."""
        ids, mask = self._tokens(query)
        return self.model.encode_text(ids, mask, normalize=True)[0].float().cpu().numpy()

    # ------------------------------------------------------------------------------------------------ rerank
    @torch.no_grad()
    def vtm_scores(self, query: str, window_ids: np.ndarray) -> np.ndarray:
        """``P(match)`` ``(K,)`` of each window with the query, by the fusion encoder (frames decoded again)."""
        if not supports_rerank(self.model):
            arch = getattr(self.model.cfg, "arch", type(self.model).__name__)
            raise ConfigError(
                f"--rerank needs a model with a fusion encoder (VTM head); {arch!r} is dual-only: search without "
                "--rerank"
            )
        ids, mask = self._tokens(query)
        transform = eval_transform(self.model.cfg.video.img_size)
        out = []
        for b in range(0, len(window_ids), self.batch_size):
            clips = []
            for i in window_ids[b : b + self.batch_size]:
                video = self.index.videos[self.index.window(int(i)).video]
                clips.append(transform(read_frames(video.ref, self.index.frame_times(int(i)))))  # (F, 3, S, S)
            video_batch = torch.stack(clips).to(self.device)  # (b, F, 3, S, S)
            n = video_batch.shape[0]
            p = self.model.vtm_probability(video_batch, ids.expand(n, -1), mask.expand(n, -1))
            out.append(p.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    # ------------------------------------------------------------------------------------------------ search
    def rank_windows(self, query: str, num: int, rerank: int = 0) -> RankedWindows:
        """The ``num`` best windows (at least ``rerank`` of them), the first ``rerank`` re-ordered by VTM."""
        if rerank < 0 or num < 0:
            raise ConfigError(f"top-k and rerank must be >= 0, got {num} and {rerank}")
        n = min(max(num, rerank), self.index.num_windows)
        if n == 0:
            return RankedWindows(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        scores, ids = self.index.search(self.embed_query(query)[None], n)
        keep = ids[0] >= 0
        ids, sims = ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float64)
        vtm = np.full(len(ids), np.nan)
        k = min(rerank, len(ids))
        if k:
            probs = self.vtm_scores(query, ids[:k])
            order = rerank_order(np.arange(len(ids)), probs)
            vtm[:k] = probs
            ids, sims, vtm = ids[order], sims[order], vtm[order]
        return RankedWindows(ids, sims, vtm)

    def search(self, query: str, top_k: int = 10, rerank: int = 0) -> list[Moment]:
        """The ``top_k`` best moments for ``query`` (see the module docstring)."""
        if top_k < 1:
            raise ConfigError(f"top-k must be >= 1, got {top_k}")
        num = max(8 * top_k, 64)
        while True:
            ranked = self.rank_windows(query, num, rerank)
            groups = self._groups(ranked)
            if len(groups) >= top_k or num >= self.index.num_windows:
                break
            num *= 4
        return [self._moment(r + 1, g, ranked) for r, g in enumerate(groups[:top_k])]

    def _groups(self, ranked: RankedWindows) -> list:
        ix = self.index
        return merge_windows(ix.window_video[ranked.ids], ix.window_start[ranked.ids], ix.window_end[ranked.ids],
                             self.merge)  # fmt: skip

    def _moment(self, rank: int, group: Any, ranked: RankedWindows) -> Moment:
        best = group.windows[0]
        video = self.index.videos[group.video]
        vtm = float(ranked.vtm[best]) if not np.isnan(ranked.vtm[best]) else None
        sim = float(ranked.similarity[best])
        return Moment(
            rank=rank, video=video.id, source=video.source, kind=video.kind, start=group.start, end=group.end,
            score=vtm if vtm is not None else sim, similarity=sim, vtm=vtm,
            window_ids=tuple(int(ranked.ids[w]) for w in group.windows),
            thumbnail=self.index.thumbnail(int(ranked.ids[best])),
        )  # fmt: skip

"""EK-100 multi-instance retrieval datasets: training clips paired with a relevant sentence, evaluation clips.

Videos are the official ``<root>/<participant_id>/<video_id>.MP4`` files, read whole-file by time
(:func:`~egovlp.data.video_io.read_video_clip`) between a clip's ``start_timestamp`` and ``stop_timestamp``.

Training (as the official EK-100 fine-tuning): frames are drawn at a random time in each of F equal segments; the
clip's text is a sentence drawn uniformly from those with relevancy > 0.1 to it, with that relevancy as the pair's
margin weight, or the clip's own narration with weight 1 when there is none
(:func:`~egovlp.data.epic_mir.sample_positive_sentence`). The sentence's text is the sentence CSV's text column, as
the release reads it for training. Relevancy rows come from the loaded matrix (the official pickle) or are computed
from the classes on the fly (:meth:`~egovlp.data.epic_mir.EpicMIRAnnotations.relevancy_row`).

Evaluation: one item per clip (segment-middle frames); the sentence gallery is encoded from
:attr:`~egovlp.data.epic_mir.EpicMIRAnnotations.texts` (the narration of the clip row each sentence names).

:class:`ClipCollate` batches the items of these and the Charades-Ego datasets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.epic_mir import POSITIVE_THRESHOLD, EpicMIRAnnotations, sample_positive_sentence
from egovlp.data.sampling import worker_rng
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.video_io import read_video_clip
from egovlp.errors import VideoReadError

log = logging.getLogger(__name__)

__all__ = ["ClipCollate", "EpicMIRDataset"]

Transform = Callable[..., torch.Tensor]


class EpicMIRDataset(Dataset):
    """Clips of an EK-100 MIR split.

    Args:
        annotations: the split (:func:`~egovlp.data.epic_mir.load_epic_mir`).
        video_root: folder of ``<participant_id>/<video_id>.MP4``.
        num_frames: frames per clip (F; the release uses 16).
        transform: ``transform(clip_uint8 (F, H, W, 3), generator) -> (F, 3, S, S)`` float.
        train: training items (random frames, a sampled positive sentence) or evaluation items (segment middles).
        bad_input: ``"raise"`` or ``"skip"`` (return None, logged) for unreadable videos.
        threshold: a sentence is a training positive when its relevancy is above it (official 0.1).

    Evaluation items are ``video (F, 3, S, S)`` and ``index`` (the clip row); training items are ``video``, ``text``,
    ``relevancy`` (the pair's margin weight), ``sentence_index`` (-1: the clip's own narration) and ``clip_index``.
    """

    def __init__(
        self,
        annotations: EpicMIRAnnotations,
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Transform | None = None,
        train: bool = False,
        bad_input: str = "raise",
        threshold: float = POSITIVE_THRESHOLD,
    ) -> None:
        self.policy = BadInputPolicy(bad_input)
        self.annotations, self.video_root, self.num_frames = annotations, str(video_root), int(num_frames)
        self.transform, self.train, self.bad_input, self.threshold = transform, bool(train), bad_input, threshold

    def __len__(self) -> int:
        return len(self.annotations)

    def _video(self, i: int, rng, generator: torch.Generator | None) -> torch.Tensor:
        clip = self.annotations.clips[i]
        path = self.annotations.video_path(self.video_root, i)
        sample = "rand" if self.train else "uniform"
        try:
            frames = read_video_clip(path, clip.start_sec, clip.stop_sec, self.num_frames, sample, rng)
        except VideoReadError as e:
            raise VideoReadError(f"{e} [EK-100 clip {clip.narration_id}]") from None
        return self.transform(frames, generator) if self.transform is not None else torch.from_numpy(frames)

    def _load(self, i: int) -> dict[str, Any]:
        if not self.train:
            return {"video": self._video(i, None, None), "index": i}
        rng = worker_rng()
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        j, weight = sample_positive_sentence(self.annotations.relevancy_row(i), rng, self.threshold)
        text = self.annotations.sentences[j].csv_text if j >= 0 else self.annotations.clips[i].narration
        video = self._video(i, rng, generator)
        return {"video": video, "text": text, "relevancy": weight, "sentence_index": j, "clip_index": i}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.policy.load(lambda: self._load(i), f"EK-100 clip {i}")


class ClipCollate:
    """Batch dict items of the downstream datasets; None items (skipped) are dropped and counted.

    Tensors are stacked (``video (B, F, 3, S, S)``, ``label (B, C)``), ints and floats become ``(B,)`` tensors,
    ``text`` is tokenised into ``input_ids`` / ``attention_mask`` ``(B, L)`` (padded to ``max_length`` or to the
    longest row, truncated at ``max_length``) and kept as the list ``text``; ``num_skipped`` counts dropped items.
    When every item was skipped the batch holds only ``num_skipped``.
    """

    def __init__(self, tokenizer: Tokenizer | None = None, max_length: int | None = None, padding: str = "longest"):
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding

    def __call__(self, batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        items = [b for b in batch if b is not None]
        out: dict[str, Any] = {"num_skipped": len(batch) - len(items)}
        if not items:
            return out
        for key, first in items[0].items():
            values = [it[key] for it in items]
            if torch.is_tensor(first):
                out[key] = torch.stack(values)
            elif isinstance(first, int):
                out[key] = torch.tensor(values, dtype=torch.long)
            elif isinstance(first, float):
                out[key] = torch.tensor(values, dtype=torch.float32)
            else:
                out[key] = values
        if "text" in out and self.tokenizer is not None:
            out.update(self.tokenizer(out["text"], max_length=self.max_length, padding=self.padding))
        return out

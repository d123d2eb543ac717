"""Text-to-video cross-attention maps of EgoVLPv2's fused layers, per word and for the whole sentence.

The probabilities come from the model's own forward (:meth:`EgoVLPv2.record_cross_attention`): for each fused text
layer ``l`` they are ``P_l = softmax(q_l k_l^T / sqrt(d))`` of shape ``(H, L, 1 + F*P)``, text tokens (queries)
over the video CLS token and the frame-major patches. A map is then::

    A   = mean over the selected layers and the H heads of P_l          # (L, 1 + F*P)
    a_w = mean of the rows of A over the sub-tokens of word w           # (1 + F*P,), sums to 1
    cls_share_w = a_w[0]                                                # mass on the video CLS token
    map_w = a_w[1:] / (1 - cls_share_w), reshaped (F, grid_h, grid_w)   # sums to 1 over the patches of all frames

The sentence map averages every non-special token. Byte-level BPE and WordPiece sub-tokens are merged into words by
decoding: a token starts a new word when the decoded text gains whitespace before it (see :func:`word_groups`).
Nothing here plots (that is :mod:`egovlp.viz.plot`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from egovlp.data.sampling import sample_times
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from egovlp.errors import ConfigError, DataError
from egovlp.features.sources import VideoRef, probe_video, read_frames

__all__ = [
    "SENTENCE",
    "AttentionMaps",
    "attention_maps",
    "fused_layers",
    "maps_from_probabilities",
    "moment_frames",
    "word_groups",
]

SENTENCE = "<sentence>"  # the label of the whole-sentence map


@dataclass(frozen=True)
class AttentionMaps:
    """Cross-attention maps of one text on one clip."""

    labels: tuple[str, ...]  # W words, then SENTENCE
    maps: np.ndarray  # (W + 1, F, grid_h, grid_w) float32; each [w] sums to 1 over frames and patches
    cls_share: np.ndarray  # (W + 1,) float32: attention mass on the video CLS token, left out of the maps
    frames: np.ndarray  # (F, S, S, 3) uint8: the frames the model saw (centre crop, resized; not normalised)
    layers: tuple[int, ...]  # the text layer indices averaged


def word_groups(tokenizer: Tokenizer, ids: Sequence[int]) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Merge sub-tokens into words.

    Args:
        ids: token ids of one text without special tokens (``tokenizer.encode(text)``).
    Returns:
        ``(words, groups)``: each word's decoded text and the positions in ``ids`` of its tokens.
    """
    groups: list[list[int]] = []
    spelled: list[str] = []  # the text each group added so far
    previous = ""
    for k in range(len(ids)):
        text = tokenizer.decode(ids[: k + 1])
        added = text[len(previous) :] if text.startswith(previous) else ""  # "" while a UTF-8 character is split
        # a word starts with whitespace, unless its group so far is only whitespace (a lone BPE space token)
        if not groups or (added[:1].isspace() and spelled[-1].strip()):
            groups.append([k])
            spelled.append(added)
        else:
            groups[-1].append(k)
            spelled[-1] += added
        previous = text
    words = tuple(tokenizer.decode([ids[k] for k in group]).strip() for group in groups)
    return words, tuple(tuple(g) for g in groups)


def fused_layers(model, layer: int | str = "all") -> tuple[int, ...]:
    """The text layer indices to average: every fused one (``"all"``) or the one named (a text layer index)."""
    available = tuple(range(model.first_fused_text, model.cfg.text.depth))
    if layer == "all":
        return available
    if isinstance(layer, str) and not layer.lstrip("-").isdigit():
        raise ConfigError(f"layer must be a fused text layer index ({', '.join(map(str, available))}) or 'all'")
    if int(layer) not in available:
        raise ConfigError(
            f"layer {layer} is not a fused layer of {model.cfg.arch}: choose one of {', '.join(map(str, available))}"
            " or 'all'"
        )
    return (int(layer),)


def maps_from_probabilities(
    probs: dict[int, torch.Tensor], groups: Sequence[Sequence[int]], num_frames: int, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Word and sentence maps from recorded probabilities (the formulas in the module docstring).

    Args:
        probs: ``{text layer: (H, L, 1 + F*P)}`` of one sample; the layers to average.
        groups: token positions of each word, in the framed sequence (``bos`` at 0).
        grid: ``(grid_h, grid_w)`` patches per frame.
    Returns:
        ``maps (W + 1, F, grid_h, grid_w)`` and ``cls_share (W + 1,)``, float32 (the last row is the sentence).
    """
    mean = torch.stack([p.float().mean(0) for p in probs.values()]).mean(0)  # (L, 1 + F*P)
    rows = [mean[list(g)].mean(0) for g in groups]
    rows.append(mean[[k for g in groups for k in g]].mean(0))
    a = torch.stack(rows)  # (W + 1, 1 + F*P)
    cls_share = a[:, 0]
    patches = a[:, 1:] / (1 - cls_share).clamp_min(1e-12)[:, None]
    maps = patches.reshape(len(rows), num_frames, *grid)
    return maps.numpy().astype(np.float32), cls_share.numpy().astype(np.float32)


def _display_frames(video: torch.Tensor) -> np.ndarray:
    """Normalised model input ``(F, 3, S, S)`` -> uint8 ``(F, S, S, 3)``."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    pixels = ((video * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def _tokens(tokenizer: Tokenizer, text: str, max_positions: int) -> tuple[dict[str, torch.Tensor], tuple, tuple]:
    text = text.strip()
    ids = tokenizer.encode(text)
    if not ids:
        raise ConfigError(f"the text {text!r} has no tokens to draw attention maps for")
    limit = max_positions - 4  # room for bos, eos and RoBERTa's position offset
    if len(ids) > limit:
        raise ConfigError(f"the text has {len(ids)} tokens; the model takes at most {limit}: shorten it")
    words, groups = word_groups(tokenizer, ids)
    framed = tuple(tuple(k + 1 for k in g) for g in groups)  # positions after bos
    return tokenizer([text]), words, framed


@torch.no_grad()
def attention_maps(
    model, tokenizer: Tokenizer, clip: np.ndarray, text: str, layer: int | str = "all", device: str = "cpu"
) -> AttentionMaps:
    """Cross-attention maps of ``text`` on ``clip``.

    Args:
        model: an EgoVLPv2 with fusion layers, in eval mode.
        clip: uint8 frames ``(F, H, W, 3)`` (any size; centre-cropped and resized to the model's input).
        layer: a fused text layer index or ``"all"`` (the mean over the fused layers).
    """
    if not getattr(getattr(model, "cfg", None), "has_fusion", False):
        arch = getattr(getattr(model, "cfg", None), "arch", type(model).__name__)
        raise ConfigError(f"model {arch!r} has no fusion layers, so it has no cross-attention to draw")
    layers = fused_layers(model, layer)
    tokens, words, groups = _tokens(tokenizer, text, model.cfg.text.max_positions)
    size = model.cfg.video.img_size
    video = eval_transform(size)(clip)  # (F, 3, S, S)
    with model.record_cross_attention() as records:
        model.fuse(video[None].to(device), tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
    grid = size // model.cfg.video.patch_size
    probs = {i: records[i][0][0].cpu() for i in layers}  # (H, L, 1 + F*P) of the one sample
    maps, cls_share = maps_from_probabilities(probs, groups, video.shape[0], (grid, grid))
    return AttentionMaps((*words, SENTENCE), maps, cls_share, _display_frames(video), layers)


def moment_frames(ref: VideoRef, start: float, end: float, num_frames: int) -> np.ndarray:
    """``num_frames`` frames sampled uniformly from ``[start, end]`` seconds of ``ref``: uint8 ``(F, H, W, 3)``.

    A missing file, a bad range or a range past the end raises a :class:`DataError` / :class:`ConfigError`
    naming the video.
    """
    where = ref.describe()
    if not Path(where).exists():
        raise DataError(f"{where}: no such video")
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ConfigError(f"{where}: the time range must have 0 <= start < end, got {start:g}-{end:g} s")
    _, duration = probe_video(ref)
    if start >= duration:
        raise ConfigError(f"{where}: start {start:g} s is past the end of the video ({duration:.2f} s)")
    times = sample_times(start, min(end, duration), num_frames)
    return read_frames(ref, times)

"""The MQ head's feature store: given (made once by ``egovlp extract``) or extracted here once and cached.

Extraction uses the ``egovlp extract`` preset (``extract/mq_video``: dual video features of 16-frame windows, stride
16, 1.875 per second at 30 fps, projected, not normalised) with the model in hand, into
``<cache>/<arch>-<fingerprint>``: the fingerprint hashes the model's weights, so fine-tuning the head (the backbone
stays frozen) and evaluating the resulting weight file read the same folder, and other weights get another one. The
extraction itself is resumable and skips finished clips (:func:`egovlp.features.extract_features`), so a second
run only reads the manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from egovlp.config import load_config
from egovlp.configs import resolve_config
from egovlp.features import ExtractConfig, extract_features

log = logging.getLogger(__name__)

__all__ = ["extract_mq_features", "weights_fingerprint"]


def weights_fingerprint(model: torch.nn.Module, length: int = 16) -> str:
    """A hex digest of every tensor of ``model.state_dict()`` (name, dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


def extract_mq_features(
    model: torch.nn.Module,
    annotations: Sequence[str | os.PathLike],
    video_root: str,
    cache_dir: str | os.PathLike,
    preset: str = "extract/mq_video",
    overrides: Sequence[str] = (),
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[object], list] | None = None,
    progress: bool = False,
) -> Path:
    """Extract (or find) the features of every clip of ``annotations`` with ``model``; returns their folder.

    Args:
        model: the backbone, already at the preset's ``window.num_frames`` (give ``window.num_frames=N`` in
            ``overrides`` when it runs at another count).
        annotations: MQ files (``videos[].clips[]``) whose clips are extracted, one feature file per clip.
        video_root: the videos (``<root>/<video_uid>.mp4``; ``source.layout=chunked`` in ``overrides`` for chunks).
        cache_dir: the cache; features go to ``<cache_dir>/<arch>-<fingerprint>``.
        preset, overrides: the ``egovlp extract`` config they are made with (``key=value`` overrides).
        rank, world_size, gather: the process group (clips are split over the ranks; ``gather`` collects to rank 0).
    """
    folder = Path(cache_dir) / f"{getattr(getattr(model, 'cfg', None), 'arch', 'model')}-{weights_fingerprint(model)}"
    device = torch.device(device)
    precision = [] if device.type == "cuda" else ["precision=fp32"]  # autocast fp16 is a GPU setting
    for path in annotations:
        layers = [*precision, *overrides, f"checkpoint=weights-{folder.name}", f"out_dir={folder}",
                  f"source.annotations={path}", f"source.video_root={video_root}",
                  f"progress={str(progress).lower()}"]  # fmt: skip
        cfg = load_config(ExtractConfig, resolve_config(preset, "extract"), layers)
        if cfg.mode != "video":
            raise ValueError(f"the MQ head reads mode=video features; {preset} with {list(overrides)} is {cfg.mode}")
        if gather is None:
            result = extract_features(cfg, model, None, device, rank, world_size)
        else:
            result = extract_features(cfg, model, None, device, rank, world_size, gather)
        if rank == 0:
            log.info("MQ features of %s in %s: %d extracted, %d done before, %d unreadable", path, folder,
                     len(result.extracted), len(result.skipped), len(result.failed))  # fmt: skip
    return folder

"""Visualisation fixtures: a short mp4, a small BPE tokenizer trained on the fly, and a tiny EgoVLPv2 with random,
non-trivial weights (open gates) saved as a weight file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from egovlp.data.tokenizer import Tokenizer
from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.models.weights import save_weights

TEXTS = [
    "#C C tightens the bolt on the bicycle handle with the T-wrench in his right hand",
    "#C C cuts the onion with a knife",
    "#C C opens the drawer and takes the scissors",
] * 20


def write_mp4(path: Path, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """A moving gradient, ``seconds`` long, libx264 (as the synthetic world's videos)."""
    width, height = size
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "veryfast", "threads": "1"}
    with container:
        for n in range(round(seconds * fps)):
            y, x = np.mgrid[0:height, 0:width]
            rgb = np.stack([(x * 4 + n * 8) % 256, (y * 5) % 256, np.full_like(x, (n * 20) % 256)], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    return write_mp4(tmp_path_factory.mktemp("video") / "kitchen.mp4")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    Tokenizer.train(TEXTS, vocab_size=300, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_dir(tokenizer_dir)


def random_model(seed: int = 0) -> EgoVLPv2:
    """The tiny EgoVLPv2 with every parameter random (LayerNorm weights near 1, gates non-zero)."""
    torch.manual_seed(seed)
    model = EgoVLPv2(get_model_config("egovlpv2-tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
            if p.ndim == 1 and p.numel() > 1:
                p.add_(1.0)
    return model.eval()


@pytest.fixture(scope="session")
def model() -> EgoVLPv2:
    return random_model()


@pytest.fixture(scope="session")
def weights(tmp_path_factory, model) -> Path:
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")

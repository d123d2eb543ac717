"""Server fixtures: an index of two short mp4 files and one chunked video (two 2 s chunks) built with a tiny EgoVLPv2
(fusion + VTM head), and the page served by a real uvicorn server on 127.0.0.1 (a free port) in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import uvicorn

from egovlp.config import load_config
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.video_io import write_chunks_file
from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.models.weights import load_model, save_weights
from egovlp.search import IndexConfig, Searcher, VideoIndex, build_index
from egovlp.serve import create_app

TEXTS = ["#C C cuts the onion with a knife", "#C C opens the drawer and takes the scissors", "#C C washes a cup"] * 20


def write_mp4(path: Path, seconds: float, fps: int = 10, size: tuple[int, int] = (64, 48), hue: int = 0) -> Path:
    """A moving gradient (libx264), ``seconds`` long."""
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "veryfast", "threads": "1"}
    with container:
        for n in range(round(seconds * fps)):
            y, x = np.mgrid[0:height, 0:width]
            rgb = np.stack([(x * 4 + n * 8 + hue) % 256, (y * 5 + hue) % 256, np.full_like(x, (n * 20) % 256)], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> dict[str, Path]:
    """The videos, tokenizer and weights an index is built from."""
    root = tmp_path_factory.mktemp("serve")
    kitchen = write_mp4(root / "videos" / "kitchen.mp4", 4.0)
    garage = write_mp4(root / "videos" / "garage.mp4", 3.0, hue=90)
    chunks = root / "ego4d"
    for k in range(2):
        write_mp4(chunks / "walk" / f"{k}.mp4", 2.0, hue=40 * k)
    write_chunks_file(chunks, 2.0)
    Tokenizer.train(TEXTS, vocab_size=300, out_dir=root / "tokenizer")
    torch.manual_seed(0)
    model = EgoVLPv2(get_model_config("egovlpv2-tiny-smallproj"))
    with torch.no_grad():  # open gates: the fused layers attend to the video
        for name, p in model.named_parameters():
            if "alpha" in name:
                p.fill_(0.5)
    weights = save_weights(model, root / "tiny.safetensors")
    return {"kitchen": kitchen, "garage": garage, "walk": chunks / "walk", "tokenizer": root / "tokenizer",
            "weights": weights, "root": root}  # fmt: skip


@pytest.fixture(scope="session")
def index(library) -> VideoIndex:
    out = library["root"] / "index"
    cfg = load_config(
        IndexConfig, None,
        [f"checkpoint={library['weights']}", f"out_dir={out}", f"tokenizer={library['tokenizer']}", "progress=false",
         "batch_size=8", "device=cpu"],
    )  # fmt: skip
    model = load_model(library["weights"], num_frames=cfg.window.num_frames)
    build_index(cfg, [str(library[k]) for k in ("kitchen", "garage", "walk")], model)
    index = VideoIndex.open(out)
    assert [Path(v.source).name for v in index.videos] == ["kitchen.mp4", "garage.mp4", "walk"]  # ids 0, 1, 2
    return index


@pytest.fixture(scope="session")
def searcher(index) -> Searcher:
    return Searcher.from_index(index)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", h11_max_incomplete_event_size=16384))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def server(index, searcher) -> Iterator[str]:
    with serving(create_app(index, searcher)) as url:
        yield url

"""Rendering of synthetic videos and writing them as chunked mp4 files (``videos/<uid>/<k>.mp4``).

A frame at time ``t`` shows the video's scene (a textured background with a lighter table band) shaken by a small
camera motion, the action nearest in time with its object in the middle of the view at the action's state at ``t``
(clamped to the start or end state outside the action), and the other objects standing aside as distractors.

Motions (all left-right symmetric, all reversed by playing time backwards):
rise / fall (vertical, from 70 % to 30 % of the height), grow / shrink (0.55x to 1.35x), brighten / dim
(0.3x to 1x brightness).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from egovlp.data.synthetic.world import Event, Scene, Video, World

__all__ = ["VideoRenderer", "background", "shape_mask", "write_chunks", "write_video"]

_TEXTURE_AMPLITUDE = 22


def background(scene: Scene, height: int, width: int) -> np.ndarray:
    """The scene's static background, ``(height, width, 3)`` uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    p = scene.period
    pattern = {
        "stripes": np.sign(np.sin(2 * math.pi * y / p)),
        "checker": np.sign(np.sin(math.pi * x / p) * np.sin(math.pi * y / p)),
        "dots": ((x % p - p / 2) ** 2 + (y % p - p / 2) ** 2 < (p / 4) ** 2) * 2.0 - 1,
        "gradient": 2 * y / max(height - 1, 1) - 1,
        "diagonal": np.sign(np.sin(2 * math.pi * (x + y) / (1.5 * p))),
        "plain": np.zeros_like(x),
    }[scene.texture]
    image = np.empty((height, width, 3), np.float32)
    table = y >= 0.62 * height
    image[~table] = scene.background
    image[table] = scene.table
    image += (_TEXTURE_AMPLITUDE * pattern)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a left-right symmetric shape of half-size ``r`` at offsets ``(dx, dy)`` from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "cube":
        return (ax <= r) & (ay <= r)
    if shape == "ball":
        return dx**2 + dy**2 <= r**2
    if shape == "cone":  # triangle pointing up
        return (ay <= r) & (ax <= (dy + r) / 2)
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
    if shape == "cross":
        return ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r))
    if shape == "diamond":
        return ax + ay <= 1.2 * r
    if shape == "bar":
        return (ax <= 1.3 * r) & (ay <= 0.45 * r)
    raise ValueError(f"unknown shape {shape!r}")


def _state(world: World, e: Event, t: float) -> tuple[float, float, float, float]:
    """(x, y, size factor, brightness) of the handled object at time ``t`` (fractions of the frame)."""
    u = min(max((t - e.start) / max(e.end - e.start, 1e-6), 0.0), 1.0)
    motion, a = world.verbs[e.verb].motion, e.amplitude
    x, y, size, light = 0.5 + e.x_offset, 0.5, 1.0, 1.0
    if motion in ("rise", "fall"):
        lo, hi = 0.5 + 0.2 * a, 0.5 - 0.2 * a  # image y grows downwards: rising goes from lo to hi
        y = lo + (hi - lo) * (u if motion == "rise" else 1 - u)
    elif motion in ("grow", "shrink"):
        lo, hi = 1 - 0.45 * a, 1 + 0.35 * a
        size = lo + (hi - lo) * (u if motion == "grow" else 1 - u)
    else:
        lo, hi = 0.3, 1.0
        light = lo + (hi - lo) * (u if motion == "brighten" else 1 - u)
    return x, y, size, light


class VideoRenderer:
    """Frames of one planned video: ``renderer.frame(t) -> (H, W, 3)`` uint8."""

    def __init__(self, world: World, video: Video) -> None:
        cfg = world.config
        self.world, self.video = world, video
        self.height, self.width = cfg.height, cfg.width
        self.shake = math.ceil(cfg.camera_shake_pixels)
        pad = 2 * self.shake
        self.background = background(video.scene, cfg.height + pad, cfg.width + pad)
        self.radius = cfg.object_size * min(cfg.height, cfg.width) / 2
        self.amplitude = cfg.camera_shake_pixels
        # Each action owns the frames from the middle of the gap before it to the middle of the gap after it.
        mids = [(a.end + b.start) / 2 for a, b in zip(video.events, video.events[1:])]
        self.bounds = np.array(mids)

    def _draw(self, frame: np.ndarray, prop: int, cx: float, cy: float, r: float, light: float = 1.0) -> None:
        shape, colour = self.video.props[prop]
        y0, y1 = max(int(cy - 1.3 * r) - 1, 0), min(int(cy + 1.3 * r) + 2, self.height)
        x0, x1 = max(int(cx - 1.3 * r) - 1, 0), min(int(cx + 1.3 * r) + 2, self.width)
        if y0 >= y1 or x0 >= x1:
            return
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        mask = shape_mask(self.world.shapes[shape], dx, dy, r)
        rgb = np.array(self.world.colours[colour][1], dtype=np.float32) * light
        frame[y0:y1, x0:x1][mask] = rgb.astype(np.uint8)

    def _shake(self, t: float) -> tuple[float, float]:
        fx, fy, px, py = self.video.scene.shake
        ox = self.amplitude * math.sin(2 * math.pi * fx * t + px)
        oy = self.amplitude * math.sin(2 * math.pi * fy * t + py)
        return ox, oy

    def objects(self, t: float) -> list[tuple[int, float, float, float, float]]:
        """The objects drawn at time ``t``, in drawing order: ``(prop, cx, cy, radius, light)`` in pixels (the
        distractors, then the handled object); their exact boxes are the synthetic world's detections."""
        if not self.video.events:
            return []
        ox, oy = self._shake(t)
        e = self.video.events[int(np.searchsorted(self.bounds, t))]
        out = [(prop, slot * self.width - ox, 0.66 * self.height - oy, 0.7 * self.radius, 1.0)
               for slot, prop in zip((0.16, 0.84), e.distractors)]  # fmt: skip
        x, y, size, light = _state(self.world, e, t)
        out.append((e.prop, x * self.width - ox, y * self.height - oy, size * self.radius, light))
        return out

    def frame(self, t: float) -> np.ndarray:
        """The frame shown at time ``t`` seconds, ``(H, W, 3)`` uint8 RGB."""
        ox, oy = self._shake(t)
        s = self.shake
        frame = self.background[s + round(oy) : s + round(oy) + self.height, s + round(ox) : s + round(ox) + self.width]
        frame = frame.copy()
        for prop, cx, cy, r, light in self.objects(t):
            self._draw(frame, prop, cx, cy, r, light)
        return frame


def _open_writer(path: Path, world: World) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
    cfg = world.config
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(cfg.fps))
    stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
    stream.codec_context.gop_size = max(1, round(cfg.gop_seconds * cfg.fps))
    stream.options = {"crf": str(cfg.crf), "preset": "veryfast", "threads": "1"}
    return container, stream


def write_chunks(world: World, video: Video, out_dir: str | os.PathLike) -> list[Path]:
    """Render ``video`` into ``out_dir/<uid>/<k>.mp4`` chunks of ``chunk_seconds``; returns the chunk paths."""
    cfg = world.config
    renderer = VideoRenderer(world, video)
    per_chunk = round(cfg.chunk_seconds * cfg.fps)
    total = round(video.duration * cfg.fps)
    folder = Path(out_dir) / video.uid
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(math.ceil(total / per_chunk)):
        path = folder / f"{k}.mp4"
        tmp = folder / f".{k}.tmp.mp4"
        container, stream = _open_writer(tmp, world)
        with container:
            for n in range(k * per_chunk, min((k + 1) * per_chunk, total)):
                frame = av.VideoFrame.from_ndarray(renderer.frame(n / cfg.fps), format="rgb24")
                frame.pts = n - k * per_chunk
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def write_video(world: World, video: Video, path: str | os.PathLike) -> Path:
    """Render ``video`` into one whole mp4 file at ``path`` (the layout of EK-100 and Charades-Ego videos)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = VideoRenderer(world, video)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    container, stream = _open_writer(tmp, world)
    with container:
        for n in range(round(video.duration * world.config.fps)):
            frame = av.VideoFrame.from_ndarray(renderer.frame(n / world.config.fps), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path

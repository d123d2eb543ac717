"""``detections.json`` + ``objects_vocab.txt``: exact object detections of the synthetic EgoClip clips (OA-Trans).

The world knows where every object is drawn (:meth:`~egovlp.data.synthetic.render.VideoRenderer.objects`), so a
"detector" is exact: per EgoClip clip, ``DETECTED_FRAMES`` frames at the middles of equal segments of the clip (as
the BUTD extraction of OA-Trans samples a video), each with the boxes of the objects in view (the handled one and
the two standing aside), labelled with class ids of ``objects_vocab.txt`` (one class per colour x shape, VG-style
``"red cube,red cubes"`` lines) and a confidence (0.9 for the handled object, 0.6 and 0.5 for the others, so that the
top objects come first). The JSON form is :mod:`egovlp.data.detections`'s; clips are keyed by ``clip_idx``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from egovlp.data.detections import butd_frame_times
from egovlp.data.synthetic.render import VideoRenderer
from egovlp.data.synthetic.world import World

__all__ = ["DETECTED_FRAMES", "SHAPE_EXTENT", "write_detections"]

DETECTED_FRAMES = 4
#: half width / half height of each shape's drawn mask, in units of its radius (render.shape_mask)
SHAPE_EXTENT = {"cube": (1.0, 1.0), "ball": (1.0, 1.0), "cone": (1.0, 1.0), "ring": (1.0, 1.0),
                "cross": (1.0, 1.0), "diamond": (1.2, 1.2), "bar": (1.3, 0.45)}  # fmt: skip
_SCORES = (0.6, 0.5, 0.9)  # the two standing aside, then the handled object (render's drawing order)


def class_id(world: World, prop: tuple[int, int]) -> int:
    shape, colour = prop
    return colour * len(world.shapes) + shape


def write_detections(world: World, out: Path) -> dict[str, str]:
    lines = [f"{c} {s},{c} {s}s" for c, _ in world.colours for s in world.shapes]
    (out / "objects_vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = world.config
    clips: dict[str, list[dict]] = {}
    for video in world.videos:
        renderer = VideoRenderer(world, video)
        for e in video.events:
            if e.held_out:
                continue
            frames = []
            for t in butd_frame_times(e.clip_start, e.clip_end, DETECTED_FRAMES):
                boxes, labels, scores = [], [], []
                for (prop, cx, cy, r, _), score in zip(renderer.objects(float(t)), _SCORES):
                    ex, ey = SHAPE_EXTENT[world.shapes[video.props[prop][0]]]
                    box = np.clip([(cx - ex * r) / cfg.width, (cy - ey * r) / cfg.height,
                                   (cx + ex * r) / cfg.width, (cy + ey * r) / cfg.height], 0.0, 1.0)  # fmt: skip
                    if box[2] > box[0] and box[3] > box[1]:
                        boxes.append([round(float(c), 5) for c in box])
                        labels.append(class_id(world, video.props[prop]))
                        scores.append(score)
                frames.append({"time": round(float(t), 4), "boxes": boxes, "labels": labels, "scores": scores})
            clips[str(e.clip_idx)] = frames
    with open(out / "detections.json", "w", encoding="utf-8") as f:
        json.dump({"clips": clips}, f)
    return {"detections": "detections.json", "objects_vocab": "objects_vocab.txt"}

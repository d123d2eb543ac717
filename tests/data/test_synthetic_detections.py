"""The synthetic world's detections are exact: every box is the tight box of the shape the renderer draws."""

from __future__ import annotations

import json

import numpy as np

from egovlp.data.detections import load_class_vocab
from egovlp.data.synthetic import SynthConfig
from egovlp.data.synthetic.render import VideoRenderer, shape_mask
from egovlp.data.synthetic.world import plan_world


def test_boxes_are_the_tight_boxes_of_the_drawn_shapes(small_world):
    cfg = SynthConfig(**{k: v for k, v in json.loads(small_world["manifest"].read_text())["config"].items()})
    world = plan_world(cfg)
    clips = json.loads(small_world["detections"].read_text())["clips"]
    vocab = load_class_vocab(small_world["objects_vocab"])
    events = {str(e.clip_idx): (v, e) for v in world.videos for e in v.events if not e.held_out}
    assert set(clips) == set(events)
    h, w = cfg.height, cfg.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    checked = 0
    for key, frames in list(clips.items())[:6]:
        video, event = events[key]
        renderer = VideoRenderer(world, video)
        for frame in frames:
            drawn = renderer.objects(frame["time"])
            assert len(drawn) == len(frame["boxes"]) == 3
            for (prop, cx, cy, r, _), box, label in zip(drawn, frame["boxes"], frame["labels"]):
                shape, colour = video.props[prop]
                assert vocab[label] == f"{world.colours[colour][0]} {world.shapes[shape]}"
                mask = shape_mask(world.shapes[shape], xs - cx, ys - cy, r)
                x0, x1 = xs[mask].min() - 0.5, xs[mask].max() + 0.5  # pixel edges of the drawn shape
                y0, y1 = ys[mask].min() - 0.5, ys[mask].max() + 0.5
                np.testing.assert_allclose(np.array(box) * [w, h, w, h], [x0, y0, x1, y1], atol=1.01)
                checked += 1
        handled = world.narration(event).split()[-2:]
        assert vocab[frames[0]["labels"][int(np.argmax(frames[0]["scores"]))]] == " ".join(handled)
    assert checked == 6 * 4 * 3

"""The synthetic world's Charades-Ego set, in the official layout (``charades/``).

::

    charades/CharadesEgo_v1_{train,test}_only1st.csv   one row per video (``actions``: cNNN start end;...)
    charades/Charades_v1_classes.txt                    ``cNNN name`` per line, e.g. ``c000 Picking up a cube``
    charades/videos/<id>.mp4                            whole videos, ids ending in EGO (e.g. S0000EGO)

Classes are the world's (verb, shape) pairs, so the class list has ``num_verbs x num_shapes`` lines (20 at the
defaults), not the real file's 157: every reader and the mAP take the class count from the file. Each video holds a
few actions; the action spans are the motions' start and end. The last ``charades_test_videos`` videos form the
test split; test classes that happen to have no positive video are skipped (and reported) by the mAP, as on the
real benchmark.
"""

from __future__ import annotations

from pathlib import Path

from egovlp.data.charades import CharadesAction, CharadesVideo, write_charades_classes, write_charades_csv
from egovlp.data.synthetic.downstream import action_text, downstream_videos, render_videos
from egovlp.data.synthetic.world import Video, World

__all__ = ["charades_class_names", "write_charades_ego"]


def charades_class_names(world: World) -> list[str]:
    """Class ``verb * num_shapes + shape`` is named like Charades' classes, e.g. ``"Picking up a cube"``."""
    return [f"{v.gerund} a {shape}" for v in world.verbs for shape in world.shapes]


def _video_row(world: World, video: Video, video_id: str, subject: int) -> CharadesVideo:
    shapes = len(world.shapes)
    actions, sentences = [], []
    for e in video.events:
        shape = video.props[e.prop][0]
        actions.append(CharadesAction(e.verb * shapes + shape, round(e.start, 2), round(e.end, 2)))
        _, colour, noun = action_text(world, video, e.verb, e.prop)
        sentences.append(f"A person {world.verbs[e.verb].phrase(f'{colour} {noun}')}.")
    script = " ".join(sentences)
    objects = ";".join(dict.fromkeys(world.shapes[s] for s, _ in video.props))
    fields = {
        "subject": f"SYN{subject:02d}", "scene": video.scene.texture, "quality": "7", "relevance": "7",
        "verified": "Yes", "script": script, "objects": objects, "descriptions": script,
        "length": f"{video.duration:.2f}",
    }  # fmt: skip
    return CharadesVideo(video_id, tuple(actions), tuple(fields.items()))


def write_charades_ego(world: World, out: Path) -> dict[str, str]:
    """Write ``charades/`` (see the module docstring); nothing when ``config.charades`` is off."""
    cfg = world.config
    if not cfg.charades:
        return {}
    root = out / "charades"
    videos = downstream_videos(world, "charades", cfg.charades_videos, cfg.charades_video_seconds)
    ids = [f"S{i:04d}EGO" for i in range(len(videos))]
    render_videos(world, [(v, root / "videos" / f"{vid}.mp4") for v, vid in zip(videos, ids)])
    rows = [_video_row(world, v, vid, i % 8) for i, (v, vid) in enumerate(zip(videos, ids))]
    first_test = cfg.charades_videos - cfg.charades_test_videos
    write_charades_csv(root / "CharadesEgo_v1_train_only1st.csv", rows[:first_test])
    write_charades_csv(root / "CharadesEgo_v1_test_only1st.csv", rows[first_test:])
    write_charades_classes(root / "Charades_v1_classes.txt", charades_class_names(world))
    return {"charades": "charades"}

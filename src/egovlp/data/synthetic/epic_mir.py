"""The synthetic world's EPIC-Kitchens-100 multi-instance retrieval set, in the official layout (``epic/``).

::

    epic/EPIC_100_retrieval_{train,test}.csv            one row per action clip (official columns)
    epic/EPIC_100_retrieval_{train,test}_sentence.csv   one sentence per distinct narration, e.g. "pick up red cube"
    epic/relevancy/caption_relevancy_EPIC_100_retrieval_{train,test}.pkl   (clips, sentences) float64, pickled
    epic/videos/<participant_id>/<video_id>.MP4         whole videos, e.g. P01/P01_01.MP4

Verbs are the world's verb classes, shapes its noun classes (a narration names one object, so ``all_nouns`` holds
one noun); the colour is in the text only. Relevancy is therefore 1 (same verb and shape), 0.5 (one of them) or 0,
and the test split has several fully relevant sentences per clip, as the real benchmark. The pickles hold exactly
what :func:`egovlp.data.epic_mir.build_relevancy` computes from the CSVs, so both relevancy paths can be exercised.
The last ``epic_test_videos`` videos form the test split.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from egovlp.data.epic_mir import EpicClip, build_relevancy, default_sentences, format_timestamp, write_epic_mir_csvs
from egovlp.data.synthetic.downstream import action_text, downstream_videos, render_videos
from egovlp.data.synthetic.world import Video, World

__all__ = ["epic_clips", "write_epic_mir"]


def _names(i: int, participants: int) -> tuple[str, str]:
    """``(participant_id, video_id)`` of video ``i``: P01/P01_01, P02/P02_01, P01/P01_02, ..."""
    pid = f"P{i % participants + 1:02d}"
    return pid, f"{pid}_{i // participants + 1:02d}"


def epic_clips(world: World, video: Video, participant_id: str, video_id: str) -> list[EpicClip]:
    """One clip row per action of ``video`` (times rounded to the hundredths the CSV keeps)."""
    fps = world.config.fps
    clips = []
    for e in video.events:
        verb, colour, shape = action_text(world, video, e.verb, e.prop)
        start, stop = round(e.clip_start, 2), round(e.clip_end, 2)
        noun_class = video.props[e.prop][0]
        clips.append(
            EpicClip(
                narration_id=f"{video_id}_{e.index}",
                participant_id=participant_id,
                video_id=video_id,
                narration_timestamp=format_timestamp(e.narration_time),
                start_sec=start,
                stop_sec=stop,
                start_frame=round(start * fps),
                stop_frame=round(stop * fps),
                narration=f"{verb} {colour} {shape}",
                verb=verb,
                verb_class=e.verb,
                noun=shape,
                noun_class=noun_class,
                all_nouns=(shape,),
                all_noun_classes=(noun_class,),
            )
        )
    return clips


def write_epic_mir(world: World, out: Path) -> dict[str, str]:
    """Write ``epic/`` (see the module docstring); nothing when ``config.epic`` is off."""
    cfg = world.config
    if not cfg.epic:
        return {}
    root = out / "epic"
    videos = downstream_videos(world, "epic", cfg.epic_videos, cfg.epic_video_seconds)
    jobs: list[tuple[Video, Path]] = []
    splits: dict[str, list[EpicClip]] = {"train": [], "test": []}
    for i, video in enumerate(videos):
        pid, vid = _names(i, cfg.epic_participants)
        jobs.append((video, root / "videos" / pid / f"{vid}.MP4"))
        split = "test" if i >= cfg.epic_videos - cfg.epic_test_videos else "train"
        splits[split] += epic_clips(world, video, pid, vid)
    render_videos(world, jobs)
    (root / "relevancy").mkdir(parents=True, exist_ok=True)
    for split, clips in splits.items():
        sentences = default_sentences(clips)
        write_epic_mir_csvs(
            root / f"EPIC_100_retrieval_{split}.csv",
            root / f"EPIC_100_retrieval_{split}_sentence.csv",
            clips,
            sentences,
        )
        with open(root / "relevancy" / f"caption_relevancy_EPIC_100_retrieval_{split}.pkl", "wb") as f:
            pickle.dump(build_relevancy(clips, sentences), f)
    return {"epic": "epic"}

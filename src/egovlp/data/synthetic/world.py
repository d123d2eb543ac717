"""The plan of a synthetic world: videos (scene, objects, timeline of narrated actions) and EgoMCQ questions.

Everything is drawn from one seeded generator, so a config gives the same world every time. Writers
(:mod:`egovlp.data.synthetic.writers`) turn the plan into files; the renderer (:mod:`.render`) into videos.

Per video: a scene (background colour and texture), ``props_per_video`` objects (a shape in a colour), and a timeline
of actions at irregular times, each "C <verb> the <colour> <shape>" with the handled object in the middle of the view
and the other objects standing aside as distractors. A few (object, verb) / (object, reversed verb) pairs of actions
per video are held out of EgoClip for EgoMCQ, whose intra-video questions always offer the reversed twin of the
answer, so that only the direction of motion tells them apart.
"""

from __future__ import annotations

import colorsys
import dataclasses
import uuid
from dataclasses import dataclass

import numpy as np

from egovlp.data.synthetic.config import COLOURS, SHAPES, SynthConfig, Verb
from egovlp.errors import ConfigError

__all__ = ["Event", "Question", "Scene", "Video", "World", "plan_videos", "plan_world"]

TEXTURES = ("stripes", "checker", "dots", "gradient", "diagonal", "plain")


@dataclass(frozen=True)
class Scene:
    """A video's look: background colour (RGB), texture kind and period, table tint, shake phases."""

    background: tuple[int, int, int]
    table: tuple[int, int, int]
    texture: str
    period: int
    shake: tuple[float, float, float, float]  # x freq, y freq (Hz), x phase, y phase


@dataclass(frozen=True)
class Event:
    """One narrated action. Times in seconds of the whole video."""

    video: int
    index: int  # narration index within the video (time order)
    verb: int  # index into World.verbs
    prop: int  # index into the video's props
    start: float  # the motion runs from start to end
    end: float
    clip_start: float  # the EgoClip window (the action +- jitter)
    clip_end: float
    narration_time: float  # the window's centre
    held_out: bool  # reserved for EgoMCQ, not in egoclip.csv
    clip_idx: int
    x_offset: float  # horizontal place of the object (fraction of the width, around the centre)
    amplitude: float  # motion strength factor (0.85-1.15)
    distractors: tuple[int, ...]  # props standing aside (left, right)


@dataclass(frozen=True)
class Video:
    uid: str
    duration: float  # seconds (a whole number of frames)
    scene: Scene
    props: tuple[tuple[int, int], ...]  # (shape index, colour index)
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Question:
    """An EgoMCQ question: option events ``(video, event index)``, the answer's position, type 1 inter / 2 intra."""

    type: int
    options: tuple[tuple[int, int], ...]
    answer: int


@dataclass(frozen=True)
class World:
    config: SynthConfig
    verbs: tuple[Verb, ...]
    shapes: tuple[str, ...]
    colours: tuple[tuple[str, tuple[int, int, int]], ...]
    videos: tuple[Video, ...]
    questions: tuple[Question, ...]

    def event(self, ref: tuple[int, int]) -> Event:
        return self.videos[ref[0]].events[ref[1]]

    def shape_colour(self, e: Event) -> tuple[int, int]:
        return self.videos[e.video].props[e.prop]

    def narration(self, e: Event) -> str:
        """Ego4D-style narration, e.g. ``"#C C picks up the red cube"``."""
        shape, colour = self.shape_colour(e)
        return f"#C C {self.verbs[e.verb].phrase(f'{self.colours[colour][0]} {self.shapes[shape]}')}"

    def noun(self, e: Event) -> int:
        """Noun (shape) id of the handled object."""
        return self.shape_colour(e)[0]


def _scene(rng: np.random.Generator, i: int, n: int) -> Scene:
    hue = (i / max(n, 1) + rng.uniform(-0.3, 0.3) / max(n, 1)) % 1.0
    bg = colorsys.hsv_to_rgb(hue, rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.55))
    table = colorsys.hsv_to_rgb((hue + rng.uniform(0.05, 0.15)) % 1.0, rng.uniform(0.2, 0.4), rng.uniform(0.5, 0.7))
    return Scene(
        background=tuple(int(255 * c) for c in bg),  # type: ignore[arg-type]
        table=tuple(int(255 * c) for c in table),  # type: ignore[arg-type]
        texture=TEXTURES[i % len(TEXTURES)],
        period=int(rng.integers(6, 14)),
        shake=(rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6), rng.uniform(0, 6.3), rng.uniform(0, 6.3)),
    )


def _timeline(rng: np.random.Generator, cfg: SynthConfig, duration: float) -> list[tuple[float, float]]:
    """Irregular (start, end) action times filling the video."""
    spans: list[tuple[float, float]] = []
    t = rng.uniform(0.5, 2.0)
    while True:
        length = rng.uniform(cfg.event_seconds_min, cfg.event_seconds_max)
        if t + length > duration - 0.5:
            return spans
        spans.append((t, t + length))
        t += length + rng.uniform(cfg.gap_seconds_min, cfg.gap_seconds_max)


def _labels(rng: np.random.Generator, cfg: SynthConfig, n: int, num_props: int) -> tuple[list, list]:
    """(verb, prop) per event and the held-out flags: pairs of an action and its time reversal for EgoMCQ."""
    combos = [(p, k) for p in range(num_props) for k in range(cfg.num_verb_pairs)]
    num_pairs = min(cfg.mcq_pairs_per_video, n // 4)
    picked = [combos[i % len(combos)] for i in rng.permutation(max(num_pairs, len(combos)))[:num_pairs]]
    slots = rng.permutation(n)
    labels: list = [None] * n
    held = [False] * n
    for j, (prop, pair) in enumerate(picked):
        first = int(rng.integers(2))
        for s, verb in ((slots[2 * j], 2 * pair + first), (slots[2 * j + 1], 2 * pair + 1 - first)):
            labels[s], held[s] = (verb, prop), True
    for s in slots[2 * num_pairs :]:
        labels[s] = (int(rng.integers(2 * cfg.num_verb_pairs)), int(rng.integers(num_props)))
    return labels, held


def _video(rng: np.random.Generator, cfg: SynthConfig, v: int) -> Video:
    frames = round(cfg.video_seconds * rng.uniform(0.85, 1.15) * cfg.fps)
    duration = frames / cfg.fps
    all_props = [(s, c) for s in range(cfg.num_shapes) for c in range(cfg.num_colours)]
    props = tuple(all_props[i] for i in rng.choice(len(all_props), cfg.props_per_video, replace=False))
    spans = _timeline(rng, cfg, duration)
    labels, held = _labels(rng, cfg, len(spans), len(props))
    events = []
    for i, ((start, end), (verb, prop), h) in enumerate(zip(spans, labels, held)):
        jitter = rng.uniform(-cfg.window_jitter_seconds, cfg.window_jitter_seconds, 2)
        clip_start, clip_end = max(0.0, start + jitter[0]), min(duration, end + jitter[1])
        others = [p for p in range(len(props)) if p != prop]
        distractors = tuple(int(p) for p in rng.permutation(others)[:2])
        events.append(
            Event(
                video=v,
                index=i,
                verb=verb,
                prop=prop,
                start=start,
                end=end,
                clip_start=clip_start,
                clip_end=clip_end,
                narration_time=(clip_start + clip_end) / 2,
                held_out=h,
                clip_idx=-1,
                x_offset=rng.uniform(-0.06, 0.06),
                amplitude=rng.uniform(0.85, 1.15),
                distractors=distractors,
            )
        )
    uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    return Video(uid, duration, _scene(rng, v, cfg.num_videos), props, tuple(events))


def _number_clips(videos: list[Video]) -> list[Video]:
    """clip_idx: training clips 0..N-1 in (video, time) order, then the held-out ones."""
    order = [e for v in videos for e in v.events if not e.held_out] + [
        e for v in videos for e in v.events if e.held_out
    ]
    idx = {(e.video, e.index): k for k, e in enumerate(order)}
    return [
        dataclasses.replace(v, events=tuple(dataclasses.replace(e, clip_idx=idx[(e.video, e.index)]) for e in v.events))
        for v in videos
    ]


def plan_world(cfg: SynthConfig) -> World:
    """The deterministic plan of the world described by ``cfg`` (no files written)."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    verbs = cfg.verbs
    videos = _number_clips([_video(rng, cfg, v) for v in range(cfg.num_videos)])
    world = World(cfg, verbs, SHAPES[: cfg.num_shapes], COLOURS[: cfg.num_colours], tuple(videos), ())
    return dataclasses.replace(world, questions=_questions(world, rng))


def plan_videos(cfg: SynthConfig, rng: np.random.Generator, count: int, seconds: float) -> tuple[Video, ...]:
    """``count`` more videos of about ``seconds`` each in the world of ``cfg``, none held out (downstream sets).

    Scenes, objects and action timelines are drawn from ``rng`` exactly as for the world's own videos;
    ``Event.video`` indexes the returned tuple.
    """
    sub = dataclasses.replace(cfg, num_videos=count, video_seconds=seconds, mcq_pairs_per_video=0)
    return tuple(_video(rng, sub, v) for v in range(count))


def _text_key(world: World, e: Event) -> tuple[int, int, int]:
    """What a narration says: (verb, shape, colour)."""
    return (e.verb, *world.shape_colour(e))


def _intra(world: World, q: Event, rng: np.random.Generator) -> list[Event] | None:
    """4 wrong options from q's video: its time-reversed twin first, then held-out actions saying other things."""
    pool = [e for e in world.videos[q.video].events if e.held_out and e.index != q.index]
    shape_colour = world.shape_colour(q)
    twins = [e for e in pool if world.shape_colour(e) == shape_colour and e.verb == q.verb ^ 1]
    if not twins:
        return None
    chosen, said = [twins[int(rng.integers(len(twins)))]], {_text_key(world, q)}
    said.add(_text_key(world, chosen[0]))
    for k in rng.permutation(len(pool)):
        if len(chosen) == 4:
            break
        if _text_key(world, pool[k]) not in said:
            chosen.append(pool[k])
            said.add(_text_key(world, pool[k]))
    return chosen if len(chosen) == 4 else None


def _inter(world: World, q: Event, rng: np.random.Generator) -> list[Event] | None:
    """4 wrong options, one held-out action from each of 4 other videos, none saying what q says."""
    chosen = []
    for v in rng.permutation([v for v in range(len(world.videos)) if v != q.video]):
        pool = [e for e in world.videos[v].events if e.held_out and _text_key(world, e) != _text_key(world, q)]
        if pool:
            chosen.append(pool[int(rng.integers(len(pool)))])
        if len(chosen) == 4:
            return chosen
    return None


def _questions(world: World, rng: np.random.Generator) -> tuple[Question, ...]:
    """``num_mcq_inter`` type-1 then ``num_mcq_intra`` type-2 questions; answers are held-out actions (cycled)."""
    held = [e for v in world.videos for e in v.events if e.held_out]
    questions: list[Question] = []
    for qtype, count, build in ((1, world.config.num_mcq_inter, _inter), (2, world.config.num_mcq_intra, _intra)):
        made, tries = 0, 0
        order = rng.permutation(len(held)) if held else np.zeros(0, np.int64)
        while made < count and held and tries < 4 * count + len(held):
            q = held[order[tries % len(held)]]
            tries += 1
            wrong = build(world, q, rng)
            if wrong is None:
                continue
            answer = int(rng.integers(5))
            options = [(e.video, e.index) for e in wrong]
            options.insert(answer, (q.video, q.index))
            questions.append(Question(qtype, tuple(options), answer))
            made += 1
        if made < count:
            raise ConfigError(
                f"could only build {made} of {count} type-{qtype} EgoMCQ questions: raise num_videos, video_seconds "
                "or mcq_pairs_per_video"
            )
    return tuple(questions)

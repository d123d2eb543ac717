"""The synthetic world's configuration and vocabulary.

Verbs come in pairs whose time reversal swaps them (picking up reversed is putting down), and every motion is
vertical, a change of size or of brightness, so a horizontal flip (a training augmentation) never changes the
meaning. Shapes are left-right symmetric for the same reason.

Verb sets (``SynthConfig.verb_set``):

* ``"default"`` (:data:`VERB_PAIRS`): picks up / puts down (rise / fall), pulls / pushes (grow / shrink), turns on /
  off (brighten / dim): different verbs for different motions.
* ``"direction"`` (:data:`DIRECTION_PAIRS`): one verb, "moves", and a direction word: ``#C C moves the red cube up``
  / ``down`` (rise / fall), ``closer`` / ``away`` (grow / shrink). Texts and motions differ only in the direction.
  Left / right and clockwise / counter-clockwise are left out on purpose: the training flip swaps them, so their
  meaning would not survive augmentation; up / down and towards / away are the flip-invariant directions.
"""

from __future__ import annotations

from dataclasses import dataclass

from egovlp.config import one_of
from egovlp.errors import ConfigError

__all__ = ["COLOURS", "DIRECTION_PAIRS", "SHAPES", "VERB_PAIRS", "VERB_SETS", "SynthConfig", "Verb"]


@dataclass(frozen=True)
class Verb:
    """A verb: its narration form, taxonomy label and synonyms, and the motion it shows."""

    text: str  # as narrated after "C": "picks up"
    label: str  # taxonomy label: "pick_up"
    synonyms: tuple[str, ...]  # the taxonomy group: the words that tag a narration with this verb
    motion: str  # "rise", "fall", "grow", "shrink", "brighten", "dim"
    base: str  # base form for EK-100 narrations: "pick up" (as in "pick up red cube")
    gerund: str  # for Charades class names: "Picking up" (as in "Picking up a cube")
    particle: str = ""  # narrated after the object: "moves the red cube up"

    def phrase(self, obj: str) -> str:
        """The verb phrase with its object: ``"picks up the red cube"``, ``"moves the red cube up"``."""
        return f"{self.text} the {obj} {self.particle}" if self.particle else f"{self.text} the {obj}"


# Each pair: (verb, its time reversal).
VERB_PAIRS: tuple[tuple[Verb, Verb], ...] = (
    (
        Verb("picks up", "pick_up", ("pick up", "picks up", "picked up", "lift", "lifts"), "rise", "pick up",
             "Picking up"),
        Verb("puts down", "put_down", ("put down", "puts down", "place", "places"), "fall", "put down",
             "Putting down"),
    ),
    (
        Verb("pulls", "pull", ("pull", "pulls", "pulled", "bring closer"), "grow", "pull", "Pulling"),
        Verb("pushes", "push", ("push", "pushes", "pushed", "push away"), "shrink", "push", "Pushing"),
    ),
    (
        Verb("turns on", "turn_on", ("turn on", "turns on", "switch on", "switches on"), "brighten", "turn on",
             "Turning on"),
        Verb("turns off", "turn_off", ("turn off", "turns off", "switch off", "switches off"), "dim", "turn off",
             "Turning off"),
    ),
)  # fmt: skip

# "moves the <object> <direction>": only the direction word tells the verbs apart (tagged by that word).
DIRECTION_PAIRS: tuple[tuple[Verb, Verb], ...] = (
    (
        Verb("moves", "move_up", ("up", "upward", "upwards"), "rise", "move up", "Moving up", "up"),
        Verb("moves", "move_down", ("down", "downward", "downwards"), "fall", "move down", "Moving down", "down"),
    ),
    (
        Verb("moves", "move_closer", ("closer", "nearer", "towards"), "grow", "move closer", "Moving closer", "closer"),
        Verb("moves", "move_away", ("away", "farther", "further"), "shrink", "move away", "Moving away", "away"),
    ),
)

VERB_SETS: dict[str, tuple[tuple[Verb, Verb], ...]] = {"default": VERB_PAIRS, "direction": DIRECTION_PAIRS}

# Left-right symmetric shapes (see render.py), by noun.
SHAPES: tuple[str, ...] = ("cube", "ball", "cone", "ring", "cross", "diamond", "bar")

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (225, 35, 35)),
    ("green", (40, 200, 60)),
    ("blue", (45, 95, 240)),
    ("yellow", (240, 220, 40)),
    ("purple", (170, 60, 215)),
    ("orange", (250, 140, 25)),
    ("white", (245, 245, 245)),
    ("cyan", (40, 215, 225)),
)


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and look of the synthetic egocentric world (``egovlp data synth --out DIR key=value ...``).

    The defaults make the demo set: 16 videos of about 4 minutes, about 1000 training clips, 150 EgoMCQ questions of
    each type, 80x64 px at 8 fps in 30 s chunks, plus small EK-100 MIR and Charades-Ego sets; it generates in well
    under a minute on 2 cores. Rendering knobs: ``width`` / ``height``, ``fps``, ``object_size``, ``num_videos`` /
    ``video_seconds`` (hence the number of clips), ``verb_set`` and ``num_verb_pairs``; e.g. ``width=96 height=64
    fps=6 num_videos=8 video_seconds=180 verb_set=direction`` makes about 300 clips.
    """

    seed: int = 0
    num_videos: int = 16
    video_seconds: float = 240.0  # mean length; each video is 85-115 % of it
    chunk_seconds: float = 30.0  # chunk length of videos/<uid>/<k>.mp4 (the real data uses 600)
    fps: int = 8
    width: int = 80
    height: int = 64
    num_verb_pairs: int = 2  # the first 1-3 pairs of the verb set (the direction set has 2)
    verb_set: str = one_of(tuple(VERB_SETS), "default")  # "default" or "direction" (see the module docstring)
    num_shapes: int = 5  # nouns, 1-7
    num_colours: int = 5  # 1-8
    props_per_video: int = 3  # objects in each video's scene: one is handled per clip, the others are distractors
    event_seconds_min: float = 1.6
    event_seconds_max: float = 3.2
    gap_seconds_min: float = 0.3
    gap_seconds_max: float = 2.0
    window_jitter_seconds: float = 0.1  # clip windows are the action +- this much
    mcq_pairs_per_video: int = 6  # held-out (object, verb / reversed verb) clip pairs per video for EgoMCQ
    num_mcq_inter: int = 150
    num_mcq_intra: int = 150
    object_size: float = 0.32  # object side as a fraction of the short side
    camera_shake_pixels: float = 1.0
    crf: int = 18  # x264 quality
    gop_seconds: float = 2.0  # keyframe interval
    tokenizer_vocab_size: int = 400
    workers: int = 2  # processes encoding videos
    # Downstream sets rendered by the same world (new videos, whole files): EK-100 MIR under epic/, Charades-Ego
    # under charades/ (see egovlp.data.synthetic.epic_mir / .charades_ego).
    epic: bool = True
    epic_videos: int = 6  # the last epic_test_videos form the test split
    epic_test_videos: int = 2
    epic_video_seconds: float = 45.0
    epic_participants: int = 2
    charades: bool = True
    charades_videos: int = 32  # the last charades_test_videos form the test split
    charades_test_videos: int = 12
    charades_video_seconds: float = 10.0
    # EgoTaskQA-format questions over new short videos under egotaskqa/ (egovlp.data.synthetic.egotaskqa); videos
    # are split train / val / test (the last egotaskqa_val_videos + egotaskqa_test_videos are val, then test).
    egotaskqa: bool = True
    egotaskqa_videos: int = 40
    egotaskqa_val_videos: int = 6
    egotaskqa_test_videos: int = 6
    egotaskqa_video_seconds: float = 10.0
    # Ego4D NLQ and MQ files over long videos under episodic/ (egovlp.data.synthetic.episodic): one clip per video,
    # split train / val / test by video (the last episodic_val_videos + episodic_test_videos are val, then test).
    episodic: bool = True
    episodic_videos: int = 6
    episodic_val_videos: int = 1
    episodic_test_videos: int = 1
    episodic_video_seconds: float = 60.0
    # QFVS in the UT-Egocentric layout under qfvs/ (egovlp.data.synthetic.qfvs): long 1 fps videos P01.. cut into
    # 5 s shots, the shapes in view as per-shot concepts, Tags.mat and oracle summaries of shape pairs.
    qfvs: bool = True
    qfvs_videos: int = 4  # leave-one-video-out needs at least 2
    qfvs_video_seconds: float = 600.0  # about 120 shots of 5 s
    qfvs_props_per_video: int = 6  # each action shows 3 of them, so the concepts in view change
    qfvs_event_seconds: float = 12.0  # mean action length (0.6-1.4x): a shot mostly shows one action

    def validate(self) -> None:
        """Raise ConfigError for impossible settings."""
        pairs = VERB_SETS.get(self.verb_set)
        if pairs is None:
            raise ConfigError(
                f"invalid SynthConfig: verb_set must be one of {', '.join(VERB_SETS)}, got {self.verb_set!r}"
            )
        checks = [
            (
                1 <= self.num_verb_pairs <= len(pairs),
                f"num_verb_pairs must be 1-{len(pairs)} for verb_set={self.verb_set!r}, got {self.num_verb_pairs}",
            ),
            (self.fps >= 1 and self.width >= 16 and self.height >= 16, "need fps >= 1 and width, height >= 16"),
            (0 < self.object_size <= 0.6, "object_size must be in (0, 0.6] (a fraction of the short side)"),
            (self.chunk_seconds > 0, "chunk_seconds must be > 0"),
            (1 <= self.num_shapes <= len(SHAPES), f"num_shapes must be 1-{len(SHAPES)}"),
            (1 <= self.num_colours <= len(COLOURS), f"num_colours must be 1-{len(COLOURS)}"),
            (1 <= self.props_per_video <= self.num_shapes * self.num_colours, "too many props_per_video"),
            (self.num_videos >= 1, "num_videos must be >= 1"),
            (self.num_mcq_inter == 0 or self.num_videos >= 5, "inter-video EgoMCQ needs num_videos >= 5"),
            (self.width % 2 == 0 and self.height % 2 == 0, "width and height must be even (yuv420p)"),
            (
                abs(self.chunk_seconds * self.fps - round(self.chunk_seconds * self.fps)) < 1e-9,
                "chunk_seconds * fps must be a whole number of frames",
            ),
            (0 < self.event_seconds_min <= self.event_seconds_max, "need 0 < event_seconds_min <= max"),
            (0 <= self.gap_seconds_min <= self.gap_seconds_max, "need 0 <= gap_seconds_min <= max"),
            (self.video_seconds >= 4 * self.event_seconds_max, "video_seconds too short for its events"),
            (
                not self.epic or 1 <= self.epic_test_videos < self.epic_videos,
                "need 1 <= epic_test_videos < epic_videos",
            ),
            (not self.epic or self.epic_participants >= 1, "epic_participants must be >= 1"),
            (not self.epic or self.epic_video_seconds >= 4 * self.event_seconds_max, "epic_video_seconds too short"),
            (
                not self.charades or 1 <= self.charades_test_videos < self.charades_videos,
                "need 1 <= charades_test_videos < charades_videos",
            ),
            (
                not self.charades or self.charades_video_seconds >= 2 * self.event_seconds_max + 2.5,
                "charades_video_seconds too short for its actions",
            ),
            (
                not self.egotaskqa
                or (
                    min(self.egotaskqa_val_videos, self.egotaskqa_test_videos) >= 1
                    and self.egotaskqa_val_videos + self.egotaskqa_test_videos < self.egotaskqa_videos
                ),
                "need egotaskqa_val_videos, egotaskqa_test_videos >= 1 and their sum < egotaskqa_videos",
            ),
            (
                not self.egotaskqa or self.egotaskqa_video_seconds >= 2 * self.event_seconds_max + 2.5,
                "egotaskqa_video_seconds too short for two actions",
            ),
            (
                not self.episodic
                or (
                    min(self.episodic_val_videos, self.episodic_test_videos) >= 1
                    and self.episodic_val_videos + self.episodic_test_videos < self.episodic_videos
                ),
                "need episodic_val_videos, episodic_test_videos >= 1 and their sum < episodic_videos",
            ),
            (
                not self.episodic or self.episodic_video_seconds >= 8 * self.event_seconds_max,
                "episodic_video_seconds too short for its actions",
            ),
            (not self.qfvs or self.qfvs_videos >= 2, "qfvs_videos must be >= 2 (leave-one-video-out)"),
            (not self.qfvs or self.num_shapes >= 2, "qfvs needs num_shapes >= 2 (queries are concept pairs)"),
            (
                not self.qfvs or 3 <= self.qfvs_props_per_video <= self.num_shapes * self.num_colours,
                "qfvs_props_per_video must be >= 3 and at most num_shapes * num_colours",
            ),
            (
                not self.qfvs or 0 < 6 * self.qfvs_event_seconds <= self.qfvs_video_seconds,
                "need qfvs_event_seconds > 0 and qfvs_video_seconds >= 6 * qfvs_event_seconds",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid SynthConfig: {message}")

    @property
    def verbs(self) -> tuple[Verb, ...]:
        """The world's verbs: the first ``num_verb_pairs`` pairs of the verb set, each pair (verb, its reversal)."""
        return tuple(v for pair in VERB_SETS[self.verb_set][: self.num_verb_pairs] for v in pair)

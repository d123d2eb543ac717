"""The synthetic world's configuration and vocabulary.

Verbs come in pairs whose time reversal swaps them (picking up reversed is putting down), and every motion is
vertical, a change of size or of brightness, so a horizontal flip (a training augmentation) never changes the
meaning. Shapes are left-right symmetric for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from egovlp.errors import ConfigError

__all__ = ["COLOURS", "SHAPES", "VERB_PAIRS", "SynthConfig", "Verb"]


@dataclass(frozen=True)
class Verb:
    """A verb: its narration form, taxonomy label and synonyms, and the motion it shows."""

    text: str  # as narrated after "C": "picks up"
    label: str  # taxonomy label: "pick_up"
    synonyms: tuple[str, ...]
    motion: str  # "rise", "fall", "grow", "shrink", "brighten", "dim"


# Each pair: (verb, its time reversal).
VERB_PAIRS: tuple[tuple[Verb, Verb], ...] = (
    (
        Verb("picks up", "pick_up", ("pick up", "picks up", "picked up", "lift", "lifts"), "rise"),
        Verb("puts down", "put_down", ("put down", "puts down", "place", "places"), "fall"),
    ),
    (
        Verb("pulls", "pull", ("pull", "pulls", "pulled", "bring closer"), "grow"),
        Verb("pushes", "push", ("push", "pushes", "pushed", "push away"), "shrink"),
    ),
    (
        Verb("turns on", "turn_on", ("turn on", "turns on", "switch on", "switches on"), "brighten"),
        Verb("turns off", "turn_off", ("turn off", "turns off", "switch off", "switches off"), "dim"),
    ),
)

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
    under a minute on 2 cores.
    """

    seed: int = 0
    num_videos: int = 16
    video_seconds: float = 240.0  # mean length; each video is 85-115 % of it
    chunk_seconds: float = 30.0  # chunk length of videos/<uid>/<k>.mp4 (the real data uses 600)
    fps: int = 8
    width: int = 80
    height: int = 64
    num_verb_pairs: int = 2  # 1-3 pairs of VERB_PAIRS
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

    def validate(self) -> None:
        """Raise ConfigError for impossible settings."""
        checks = [
            (1 <= self.num_verb_pairs <= len(VERB_PAIRS), f"num_verb_pairs must be 1-{len(VERB_PAIRS)}"),
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
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid SynthConfig: {message}")

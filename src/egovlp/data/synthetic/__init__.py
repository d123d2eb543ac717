"""A synthetic egocentric world in the official EgoClip / EgoMCQ formats, learnable by a tiny model on a CPU.

``generate(out_dir, SynthConfig())`` writes::

    videos/<video_uid>/<k>.mp4        chunked videos (chunk_seconds each, H.264)
    videos/chunks.json                the chunk length, {"chunk_seconds": 30.0} (read when chunk_seconds=0)
    egoclip.csv                       training clips (TAB-separated, official columns)
    egomcq.json                       inter- (type 1) and intra-video (type 2) questions over held-out clips
    narration.json                    the raw narrations in Ego4D's layout (input of `egovlp data build-egoclip`)
    narration_verb_taxonomy.csv       verb classes (Ego4D's label,group format)
    narration_noun_taxonomy.csv       noun classes
    tokenizer/                        byte-level BPE trained on the narrations (tokenizer.json, vocab.json, merges.txt)
    detections.json, objects_vocab.txt  exact object boxes per EgoClip clip (egovlp.data.detections JSON form)
    epic/                             EK-100 MIR set (official CSVs, relevancy pickles, whole videos; SynthConfig.epic)
    charades/                         Charades-Ego set (official CSVs, class list, whole videos; SynthConfig.charades)
    egotaskqa/                        EgoTaskQA set (question JSONs, answer set, short videos; SynthConfig.egotaskqa)
    episodic/                         Ego4D NLQ and MQ sets (nlq_*.json, moments_*.json, long videos; .episodic)
    qfvs/                             QFVS set (UT-Egocentric layout: 1 fps P0X.mp4, shot tags, Tags.mat; .qfvs)
    manifest.json, README.txt         what is where, sizes, chunk_seconds, num_verbs / num_nouns

The world: each video has its own scene (background colour and texture) and a few objects (shapes in colours).
Its timeline is a sequence of actions at irregular times, narrated ``#C C <verb> the <colour> <shape>``; the handled
object sits in the middle of the view and moves, the others stand aside as distractors. Verbs differ only in motion
over time (picks up / puts down: up / down; pulls / pushes: grows / shrinks; turns on / off: brightens / dims), are
unchanged by a horizontal flip, and each is its partner played backwards; so a model that ignores time order cannot
tell the intra-video EgoMCQ answer from its reversed twin, which every intra-video question offers. With
``verb_set="direction"`` the narrations are ``#C C moves the <colour> <shape> up|down|closer|away``: only the
direction differs. Frame size, fps, object size, the number and length of videos and the verb set are all
``SynthConfig`` fields.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from egovlp.data.synthetic.config import SynthConfig
from egovlp.data.synthetic.render import write_chunks
from egovlp.data.synthetic.world import World, plan_world
from egovlp.data.synthetic.writers import WRITERS
from egovlp.data.video_io import CHUNKS_FILE, read_chunks_file, write_chunks_file
from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["SynthConfig", "SynthSummary", "World", "generate", "plan_world"]


@dataclass(frozen=True)
class SynthSummary:
    """Where :func:`generate` put things (absolute paths) and how much it wrote."""

    root: Path
    files: dict[str, Path]  # name -> path: videos, egoclip, egomcq, narrations, verb/noun_taxonomy, tokenizer, manifest
    num_videos: int
    num_clips: int  # training clips in egoclip.csv
    num_mcq: dict[str, int]  # {"inter": .., "intra": ..}
    num_verbs: int
    num_nouns: int
    chunk_seconds: float
    seconds: float  # generation time

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


def _write_videos(world: World, out: Path) -> int:
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    write_chunks_file(videos_dir, world.config.chunk_seconds)
    workers = max(1, min(world.config.workers, len(world.videos), os.cpu_count() or 1))
    if workers == 1:
        return sum(len(write_chunks(world, v, videos_dir)) for v in world.videos)
    # fork: the children only run numpy and PyAV; spawn would re-import torch in every child.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(write_chunks, world, v, videos_dir) for v in world.videos]
        return sum(len(f.result()) for f in futures)


def _manifest(world: World, files: dict[str, str], num_chunks: int) -> dict:
    cfg = world.config
    return {
        "format": "egovlp-synthetic-1",
        "config": asdict(cfg),
        "files": files,
        "num_videos": len(world.videos),
        "num_chunks": num_chunks,
        "chunk_seconds": cfg.chunk_seconds,
        "fps": cfg.fps,
        "resolution": {"width": cfg.width, "height": cfg.height},
        "total_seconds": round(sum(v.duration for v in world.videos), 3),
        "num_clips": sum(not e.held_out for v in world.videos for e in v.events),
        "num_held_out_clips": sum(e.held_out for v in world.videos for e in v.events),
        "num_mcq": {
            "inter": sum(q.type == 1 for q in world.questions),
            "intra": sum(q.type == 2 for q in world.questions),
        },
        "num_verbs": len(world.verbs),
        "num_nouns": len(world.shapes),
        "verbs": [v.label for v in world.verbs],
        "nouns": list(world.shapes),
        "colours": [c[0] for c in world.colours],
        "videos": [{"video_uid": v.uid, "duration": v.duration, "texture": v.scene.texture} for v in world.videos],
    }


def _readme(manifest: dict) -> str:
    return (
        "egovlp synthetic egocentric world (generated by `egovlp data synth`; see egovlp.data.synthetic)\n\n"
        f"videos/<video_uid>/<k>.mp4  {manifest['num_videos']} videos, {manifest['num_chunks']} chunks of "
        f"{manifest['chunk_seconds']} s, {manifest['resolution']['width']}x{manifest['resolution']['height']} px, "
        f"{manifest['fps']} fps\n"
        f"egoclip.csv                 {manifest['num_clips']} training clips (TAB-separated, official columns)\n"
        f"egomcq.json                 {manifest['num_mcq']['inter']} inter-video (type 1) and "
        f"{manifest['num_mcq']['intra']} intra-video (type 2) questions over held-out clips\n"
        "narration.json              raw narrations, Ego4D layout\n"
        f"narration_*_taxonomy.csv    {manifest['num_verbs']} verbs, {manifest['num_nouns']} nouns (label,group)\n"
        "tokenizer/                  byte-level BPE trained on the narrations\n"
        "detections.json             exact object boxes of the EgoClip clips (OA-Trans), objects_vocab.txt classes\n"
        + _downstream_readme(manifest["files"])
        + "manifest.json               all of the above, machine-readable, with the generating config\n\n"
        f"Use chunk_seconds={manifest['chunk_seconds']} (or 0: videos/{CHUNKS_FILE} records it), "
        f"num_verbs={manifest['num_verbs']}, num_nouns={manifest['num_nouns']} when loading.\n"
    )


def _downstream_readme(files: dict[str, str]) -> str:
    lines = ""
    if "epic" in files:
        lines += "epic/                       EK-100 MIR: retrieval CSVs, relevancy pickles, videos/<P>/<id>.MP4\n"
    if "charades" in files:
        lines += "charades/                   Charades-Ego: *_only1st.csv, Charades_v1_classes.txt, videos/<id>.mp4\n"
    if "egotaskqa" in files:
        lines += "egotaskqa/                  EgoTaskQA: Data/qa/direct/formatted_*_qas_encode.json, qa_videos/*.mp4\n"
    if "episodic" in files:
        lines += "episodic/                   Ego4D NLQ + MQ: nlq_*.json, moments_*.json, videos/<video_uid>.mp4\n"
    if "qfvs" in files:
        lines += "qfvs/                       QFVS, UT-Egocentric layout: videos/P0X.mp4 (1 fps), tags, oracles\n"
    return lines


def _summary(out: Path, manifest: dict, seconds: float) -> SynthSummary:
    return SynthSummary(
        root=out,
        files={k: out / v for k, v in manifest["files"].items()},
        num_videos=manifest["num_videos"],
        num_clips=manifest["num_clips"],
        num_mcq=manifest["num_mcq"],
        num_verbs=manifest["num_verbs"],
        num_nouns=manifest["num_nouns"],
        chunk_seconds=manifest["chunk_seconds"],
        seconds=seconds,
    )


def _previous_world(out: Path, cfg: SynthConfig, reuse: bool) -> dict | None:
    """The manifest of an identical world already in ``out`` (to reuse), else clear a previous world's videos.

    Refuses a non-empty folder that holds no synthetic world, so that nothing else is ever overwritten.
    """
    path = out / "manifest.json"
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise DataError(f"{out}: folder is not empty and holds no synthetic world (no manifest.json)")
        return None
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    wanted = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    # A field added to SynthConfig after the world was made is absent from its manifest: read it as the default.
    defaults = asdict(SynthConfig())
    had = {k: v for k, v in {**defaults, **old.get("config", {})}.items() if k != "workers"}
    if reuse and had == wanted:
        if read_chunks_file(out / "videos") is None:  # a world made before chunks.json existed
            write_chunks_file(out / "videos", cfg.chunk_seconds)
        return old
    path.unlink()  # written last: its absence marks an incomplete world if this run is interrupted
    for name in ("videos", "tokenizer", "epic", "charades", "egotaskqa", "episodic", "qfvs"):
        shutil.rmtree(out / name, ignore_errors=True)
    return None


def generate(out_dir: str | os.PathLike, config: SynthConfig | None = None, reuse: bool = True) -> SynthSummary:
    """Write the synthetic world of ``config`` (defaults: the demo set) under ``out_dir``; deterministic.

    ``out_dir`` must be empty, missing or hold a previous synthetic world; an identical complete world (same config
    in its ``manifest.json``, written last) is reused when ``reuse``, any other is replaced.
    """
    cfg = config or SynthConfig()
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    previous = _previous_world(out, cfg, reuse)
    if previous is not None:
        log.info("reusing the identical synthetic world in %s", out)
        return _summary(out, previous, time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    world = plan_world(cfg)
    num_chunks = _write_videos(world, out)
    files = {"videos": "videos"}
    for writer in WRITERS.values():
        files.update(writer(world, out))
    files["manifest"] = "manifest.json"
    manifest = _manifest(world, files, num_chunks)
    (out / "README.txt").write_text(_readme(manifest), encoding="utf-8")
    with open(out / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    seconds = time.perf_counter() - start
    log.info("synthetic world: %d videos, %d clips, %s EgoMCQ in %.1f s -> %s", len(world.videos),
             manifest["num_clips"], manifest["num_mcq"], seconds, out)  # fmt: skip
    return _summary(out, manifest, seconds)

"""``egovlp data``: make and prepare datasets.

egovlp data synth --out data/synth [seed=1 num_videos=8 ...]      synthetic world in the official formats
egovlp data prepare-videos --src ego4d/full_scale --dst ego4d/chunked  resize to short side 256, 600 s chunks
egovlp data build-egoclip --narrations narration.json --verb-taxonomy narration_verb_taxonomy.csv \\
    --noun-taxonomy narration_noun_taxonomy.csv [--ego4d-json ego4d.json] --out egoclip.csv
egovlp data tokenizer --corpus egoclip.csv|texts.txt --vocab-size 8000 --out my_tokenizer [--kind wordpiece]
"""

from __future__ import annotations

import argparse

from egovlp.cli.common import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="make and prepare datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    s = commands.add_parser("synth", help="generate the synthetic egocentric world (EgoClip/EgoMCQ formats)")
    s.add_argument("--out", required=True, help="output folder (empty, or a previous synthetic world)")
    s.add_argument("--force", action="store_true", help="regenerate even if an identical world is there")
    add_config_args(s, example="num_videos=8")
    s.set_defaults(func=run_synth)

    v = commands.add_parser("prepare-videos", help="resize and cut videos into chunks (resumable)")
    v.add_argument("--src", required=True, help="folder of <video_uid>.mp4 files")
    v.add_argument("--dst", required=True, help="output folder of <video_uid>/<k>.mp4 chunks")
    v.add_argument("--short-side", type=int, default=256)
    v.add_argument("--chunk-seconds", type=float, default=600.0)
    v.add_argument("--crf", type=int, default=23, help="x264 quality (lower is better)")
    v.add_argument("--preset", default="veryfast", help="x264 preset")
    v.add_argument("--stop-on-error", action="store_true", help="stop at the first bad video instead of skipping it")
    v.set_defaults(func=run_prepare_videos)

    b = commands.add_parser("build-egoclip", help="build egoclip.csv from Ego4D narration.json")
    b.add_argument("--narrations", required=True, help="Ego4D narration.json")
    b.add_argument("--verb-taxonomy", required=True, help="label,group CSV (Ego4D narration_verb_taxonomy.csv)")
    b.add_argument("--noun-taxonomy", required=True, help="label,group CSV (Ego4D narration_noun_taxonomy.csv)")
    b.add_argument("--ego4d-json", help="Ego4D metadata (ego4d.json) for video durations")
    b.add_argument("--alpha", type=float, default=4.9, help="window scale: half width = mean gap / (2 alpha)")
    b.add_argument("--out", required=True, help="output egoclip.csv")
    b.set_defaults(func=run_build_egoclip)

    t = commands.add_parser(
        "tokenizer",
        help="train a tokenizer (byte-level BPE or WordPiece) on your own narrations",
        description="Train a tokenizer offline on a corpus and write it to a folder for data.tokenizer=DIR. The "
        "trainer keeps every character seen (a BPE all 256 bytes), so a small --vocab-size can be exceeded.",
    )
    t.add_argument(
        "--corpus",
        required=True,
        help="an EgoClip CSV (.csv/.tsv: its clip_text column, cleaned) or a text file (one text per non-empty line)",
    )
    t.add_argument("--vocab-size", type=int, required=True, help="vocabulary size to aim for, special tokens included")
    t.add_argument("--out", required=True, help="output folder (tokenizer.json + vocab.json/merges.txt or vocab.txt)")
    t.add_argument(
        "--kind",
        choices=("bpe", "wordpiece"),
        default="bpe",
        help="bpe: RoBERTa byte-level BPE, <s> A </s> (default); wordpiece: BERT WordPiece uncased, [CLS] A [SEP]",
    )
    t.add_argument("--min-frequency", type=int, default=2, help="occurrences a merge/subword needs (default 2)")
    t.add_argument("--force", action="store_true", help="replace a tokenizer already in --out")
    t.set_defaults(func=run_tokenizer)


def run_synth(args: argparse.Namespace) -> int:
    from egovlp.config import load_config
    from egovlp.data.synthetic import SynthConfig, generate

    cfg = load_config(SynthConfig, args.config, args.overrides)
    summary = generate(args.out, cfg, reuse=not args.force)
    print(
        f"wrote {summary.num_videos} videos, {summary.num_clips} EgoClip clips, {summary.num_mcq['inter']} inter- and "
        f"{summary.num_mcq['intra']} intra-video EgoMCQ questions to {summary.root} in {summary.seconds:.1f} s "
        f"(chunk_seconds={summary.chunk_seconds:g}, num_verbs={summary.num_verbs}, num_nouns={summary.num_nouns})"
    )
    return 0


def run_prepare_videos(args: argparse.Namespace) -> int:
    from egovlp.data.prepare import prepare_videos

    stats = prepare_videos(
        args.src, args.dst, args.short_side, args.chunk_seconds, args.crf, args.preset, stop_on_error=args.stop_on_error
    )
    print(
        f"{stats.videos} videos: {stats.chunks_written} chunks written, {stats.chunks_skipped} already done, "
        f"{stats.failed} failed"
    )
    return 1 if stats.failed else 0


def run_build_egoclip(args: argparse.Namespace) -> int:
    from egovlp.data.narrations import build_egoclip
    from egovlp.data.taxonomy import load_taxonomy

    n = build_egoclip(
        args.narrations,
        load_taxonomy(args.verb_taxonomy),
        load_taxonomy(args.noun_taxonomy),
        args.out,
        ego4d_json=args.ego4d_json,
        alpha=args.alpha,
    )
    print(f"wrote {n} rows to {args.out}")
    return 0


def run_tokenizer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from egovlp.data.corpus import read_corpus
    from egovlp.data.tokenizer import TOKENIZER_FILES, Tokenizer
    from egovlp.errors import ConfigError

    for flag, value in (("--vocab-size", args.vocab_size), ("--min-frequency", args.min_frequency)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    existing = [name for name in TOKENIZER_FILES if (out / name).exists()]
    if existing and not args.force:
        raise ConfigError(f"{out} already holds a tokenizer ({', '.join(existing)}); pass --force to replace it")
    texts = read_corpus(args.corpus)
    for name in existing:  # --force: no file of the previous tokenizer may stay beside the new one
        (out / name).unlink()
    tok = Tokenizer.train(texts, args.vocab_size, out, min_frequency=args.min_frequency, kind=args.kind)
    written = ", ".join(name for name in TOKENIZER_FILES if (out / name).is_file())
    specials = ", ".join(f"{token} {i}" for token, i in tok.special_token_ids().items())
    print(
        f"wrote a {tok.kind} tokenizer of {tok.vocab_size} tokens, trained on {len(texts)} texts of {args.corpus}, "
        f"to {out} ({written}); special ids: {specials}"
    )
    print(
        f"use it with data.tokenizer={out} model.text.vocab_size={tok.vocab_size} (or more) "
        f"model.text.pad_token_id={tok.pad_id}"
    )
    return 0

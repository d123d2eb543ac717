"""Data: files on disk -> model-ready batches, and the synthetic egocentric world the demo and tests run on.

Modules:
    video_io      PyAV decoding: one seek per file, frames picked by presentation time; chunked layout reader
    sampling      frame times of a clip (random per segment for training, segment middles for evaluation)
    transforms    clip transforms in plain torch (random resized crop + flip, eval resize/center crop, normalise)
    tokenizer     RoBERTa byte-level BPE (``tokenizers``), training offline, MLM masking
    text          Ego4D narration cleaning (``#C C``, ``#O``, ``#unsure``)
    tags          ``tag_verb`` / ``tag_noun`` list literals
    egoclip_table the 3.85 M-row ``egoclip.csv`` in compact numpy columns
    egoclip       EgoClip training dataset (scene-aware negatives, skip policy)
    egomcq        EgoMCQ evaluation dataset
    collate       batch collation (tokenise, flatten negative pairs, drop skipped samples, MLM)
    taxonomy      Ego4D verb/noun taxonomies and narration tagging
    narrations    ``egoclip.csv`` from Ego4D ``narration.json`` (EgoVLP clip windows)
    nlq           Ego4D NLQ v1 annotations and the challenge submission file
    moments       Ego4D MQ annotations and the challenge submission file
    egotaskqa     EgoTaskQA question files and answer set
    qfvs          UT-Egocentric query-focused summarisation layout (oracle summaries, shot tags, Tags.mat)
    kts           Kernel Temporal Segmentation of a shot sequence
    prepare       resize + chunk real videos (resumable)
    synthetic     the synthetic world generator

See ``docs/data.md`` for formats and commands.
"""

from egovlp.data.collate import EgoClipCollate, EgoMCQCollate
from egovlp.data.egoclip import EgoClipDataset
from egovlp.data.egoclip_table import EgoClipTable, load_egoclip
from egovlp.data.egomcq import EgoMCQDataset, load_egomcq
from egovlp.data.text import clean_narration
from egovlp.data.tokenizer import Tokenizer, mask_tokens
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.data.video_io import read_clip, read_frames_at, read_video_clip

__all__ = [
    "EgoClipCollate",
    "EgoClipDataset",
    "EgoClipTable",
    "EgoMCQCollate",
    "EgoMCQDataset",
    "Tokenizer",
    "clean_narration",
    "eval_transform",
    "load_egoclip",
    "load_egomcq",
    "mask_tokens",
    "read_clip",
    "read_frames_at",
    "read_video_clip",
    "train_transform",
]

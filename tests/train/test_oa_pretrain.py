"""OA-Trans pre-training end to end: ``egovlp pretrain loss.objective=oa_trans`` on the synthetic world's exact
detections, both variants; the saved weights are a plain frozen-family dual encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from egovlp.cli.main import main
from egovlp.errors import ConfigError
from egovlp.models import get_model_config
from egovlp.models.weights import read_model_config
from egovlp.tasks.objectives import get_objective
from egovlp.tasks.pretrain import PretrainConfig

from .test_pretrain_frozen import DEMO, frozen_overrides, wordpiece  # noqa: F401  (fixture)


def oa_overrides(world, out: Path, tokenizer: Path, variant: str, steps: int = 2) -> list[str]:
    return frozen_overrides(world, out, tokenizer, **{
        "loss.objective": "oa_trans", "oa.detections": world["detections"], "oa.vocab": world["objects_vocab"],
        "oa.variant": variant, "oa.bad_detections": "raise", "oa.top_k": 3, "train.max_steps": steps,
        "train.eval_every": steps, "train.save_every": steps})  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "terms"),
    [
        ("four_stream", {"video_text", "video_tags", "anchor_text"}),
        ("global_local", {"video_text", "caption_tags", "region"}),
    ],
)
def test_oa_pretraining_runs_end_to_end(small_world, wordpiece, tmp_path, capsys, variant, terms):  # noqa: F811
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(DEMO), *oa_overrides(small_world, out, wordpiece, variant)]) == 0
    assert "finished at step 2" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert set(r) >= {"loss", *terms} and all(r[t] > 0 for t in terms)
        assert r["loss"] == pytest.approx(sum(r[t] for t in terms), rel=1e-4)  # default weights 1
    assert [r for r in records if r["kind"] == "eval"][-1]["egomcq/questions"] == 13
    # the object streams leave no trace in the weights: a plain frozen-family dual encoder
    cfg = read_model_config(out / "model.safetensors")
    assert (cfg.family, cfg.num_fusion_layers) == ("frozen", 0)
    assert not any("local_proj" in k for k in load_file(str(out / "model.safetensors")))


def test_oa_objective_needs_detections():
    cfg = PretrainConfig(model=get_model_config("frozen-in-time-tiny"))
    with pytest.raises(ConfigError, match=r"loss.objective=oa_trans needs oa.detections"):
        get_objective("oa_trans").wrap_dataset(None, cfg)


def test_oa_module_wires_each_stream_through_the_shared_towers(small_world, wordpiece):  # noqa: F811
    """The four-stream module's terms equal NormSoftmax of hand-encoded streams: caption and tag sentence through
    the text tower, the clip and the one-frame masked anchor through the video tower."""
    import torch

    from egovlp.data.collate import EgoClipCollate
    from egovlp.data.detections import open_detections
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.data.oa_clips import ObjectAwareClips, ObjectCollate
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.data.transforms import eval_transform
    from egovlp.losses import egonce_loss
    from egovlp.models import create_model
    from egovlp.tasks.oa_pretrain import OAConfig, OAModule

    tok = Tokenizer.from_dir(wordpiece)
    base = EgoClipDataset(small_world["egoclip"], small_world["videos"], 2, eval_transform(32),
                          chunk_seconds=small_world.chunk_seconds, num_verbs=small_world.num_verbs,
                          num_nouns=small_world.num_nouns)  # fmt: skip
    det = open_detections(small_world["detections"], small_world["objects_vocab"])
    items = [ObjectAwareClips(base, det, 3, 32, 8)[i] for i in range(5)]
    batch = ObjectCollate(EgoClipCollate(tok, 12, "max_length", None), tok, 10)(items)
    model = create_model("frozen-in-time-tiny").eval()
    module = OAModule(model, OAConfig(video_tags_weight=0.5), 0.05, "full")
    with torch.no_grad():
        out = module(batch)
        v = model.encode_video(batch["video"])
        t = model.encode_text(batch["input_ids"], batch["attention_mask"])
        tags = model.encode_text(batch["tag_input_ids"], batch["tag_attention_mask"])
        anchor = model.encode_video(batch["anchor"][:, None])
    assert batch["has_objects"].all() and batch["anchor"].shape == (5, 3, 32, 32)
    torch.testing.assert_close(out["video_text"], egonce_loss(t, v, positives="none").loss)
    torch.testing.assert_close(out["video_tags"], egonce_loss(tags, v, positives="none").loss)
    torch.testing.assert_close(out["anchor_text"], egonce_loss(t, anchor, positives="none").loss)
    torch.testing.assert_close(out["loss"], out["video_text"] + 0.5 * out["video_tags"] + out["anchor_text"])

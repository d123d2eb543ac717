"""One rank of the two-process OA-Trans loss check; launched by test_loss_oa_distributed.py (not a test module).

Usage: python oa_dist_worker.py VARIANT RANK WORLD_SIZE INIT_METHOD RESULT_FILE

Every rank builds the same seeded tiny frozen-family model and the same global batch of every stream, runs
``OAModule`` under DistributedDataParallel (gloo, CPU) on its own slice, and compares the loss terms and the averaged
gradients with a single-process ``OAModule`` on the full batch. A failed check raises (non-zero exit).
"""

from __future__ import annotations

import copy
import json
import sys
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from egovlp.models import create_model
from egovlp.tasks.oa_pretrain import OAConfig, OAModule

LOCAL_BATCH = 3


def global_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (n, 6), generator=g)
    tag_ids = torch.randint(5, 1000, (n, 5), generator=g)
    k = 2
    masks = torch.rand(n, k, 4, 4, generator=g) > 0.5
    return {
        "video": torch.randn(n, 4, 3, 32, 32, generator=g),
        "input_ids": ids, "attention_mask": torch.ones_like(ids),
        "tag_input_ids": tag_ids, "tag_attention_mask": torch.ones_like(tag_ids),
        "anchor": torch.randn(n, 3, 32, 32, generator=g), "anchor_full": torch.randn(n, 3, 32, 32, generator=g),
        "has_objects": torch.tensor([True, False, True, True, True, False][:n]),
        "object_valid": torch.ones(n, k, dtype=torch.bool), "object_masks": masks,
        "caption_tag_ids": ids, "caption_tag_mask": torch.ones_like(ids),
        "tag_spans": torch.rand(n, k, 6, generator=g) > 0.5,
        "verb": torch.eye(3)[torch.arange(n) % 3], "noun": torch.eye(3)[torch.arange(n) % 2],
    }  # fmt: skip


def reference(variant: str) -> tuple[OAModule, dict, OAModule]:
    """The single-process full-batch module, its terms (gradients left in it) and an untouched copy for DDP; run
    before the process group exists, so nothing is gathered."""
    torch.manual_seed(0)
    cfg = OAConfig(variant=variant, video_text_positives="verb_and_noun", video_tags_weight=0.5)
    module = OAModule(create_model("frozen-in-time-tiny").eval(), cfg, 0.05, "full")
    fresh = copy.deepcopy(module)
    full = module(global_batch(LOCAL_BATCH * 2))
    full["loss"].backward()
    return module, {k: v.detach() for k, v in full.items()}, fresh


def check(variant: str, ref: tuple[OAModule, dict, OAModule], rank: int) -> None:
    want, full, module = ref
    batch = global_batch(LOCAL_BATCH * 2)
    local = {k: v[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH] for k, v in batch.items()}
    ddp = DDP(module)  # kept alive through backward: its reducer averages the gradients over ranks
    out = ddp(local)
    out["loss"].backward()
    for name, value in full.items():
        torch.testing.assert_close(out[name].detach(), value, msg=f"{variant}: term {name}")
    # float32 sums taken in another order: an absolute tolerance at the scale of the largest gradient (the zero-init
    # time attention's gradients are at rounding level, ~1e-6, where only an absolute tolerance makes sense)
    scale = max(float(q.grad.abs().max()) for q in want.parameters() if q.grad is not None)
    for (name, p), (_, q) in zip(module.named_parameters(), want.named_parameters()):
        if q.grad is None:
            assert p.grad is None or not p.grad.abs().any(), f"{variant}: {name} has a gradient only when sharded"
            continue
        what = f"{variant}: gradient of {name}"
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6 * scale, msg=lambda m, w=what: f"{w}: {m}")


def main(argv: list[str]) -> None:
    variant, rank, world, init, result = argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4]
    assert world == 2, "the reference batch is two local batches"
    torch.set_num_threads(1)
    refs = {name: reference(name) for name in variant.split(",")}
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    status = "ok"
    try:
        for name in variant.split(","):
            check(name, refs[name], rank)
    except Exception:
        status = traceback.format_exc()
    with open(result, "w") as f:
        json.dump({"status": status}, f)
    dist.destroy_process_group()
    if status != "ok":
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])

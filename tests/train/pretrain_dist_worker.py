"""One rank of the 2-process pre-training checks; launched by test_pretrain_distributed.py (not a test module itself).

Usage: python pretrain_dist_worker.py SCENARIO[,SCENARIO...] RANK WORLD_SIZE INIT_METHOD TOKENIZER_DIR RESULT_FILE

Every rank builds the same seeded tiny EgoVLPv2 and the same global batch, and holds its half of the batch.
Single-process full-batch references are computed BEFORE the process group exists (``world_info()`` is then
``(0, 1)``, so ``PretrainModule`` gathers nothing); then each scenario runs ``PretrainModule`` wrapped in
DistributedDataParallel (gloo, CPU) on the local half. A failed check raises, so the process exits non-zero.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from egovlp.data.collate import mask_rows
from egovlp.data.tokenizer import Tokenizer
from egovlp.losses import world_info
from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import get_model_config
from egovlp.tasks.pretrain import LossConfig, PretrainModule
from egovlp.train.distributed import DistInfo

LOCAL_BATCH = 4
NUM_VERBS, NUM_NOUNS = 5, 6
EGONCE_ONLY = LossConfig(mlm_weight=0.0, vtm_weight=0.0)


def build_model() -> EgoVLPv2:
    """The tiny registered model with text dropout off (video dropout and drop-path are 0 already), seeded."""
    cfg = get_model_config("egovlpv2-tiny")
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, dropout=0.0))
    torch.manual_seed(0)
    return EgoVLPv2(cfg)


def global_batch(model: EgoVLPv2, tokenizer: Tokenizer, world_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``world_size * LOCAL_BATCH`` items: random clips, token ids inside the tokenizer, multi-hot verb/noun tags."""
    g = torch.Generator().manual_seed(seed)
    n, size, frames = world_size * LOCAL_BATCH, model.cfg.video.img_size, model.cfg.video.num_frames
    ids = torch.randint(len(tokenizer.special_ids), tokenizer.vocab_size, (n, 10), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    ids[1, 6], ids[1, 7:], mask[1, 7:] = 2, 1, 0  # one padded narration
    verb = (torch.rand(n, NUM_VERBS, generator=g) < 0.3).float()
    noun = (torch.rand(n, NUM_NOUNS, generator=g) < 0.3).float()
    verb[torch.arange(n), torch.randint(NUM_VERBS, (n,), generator=g)] = 1.0
    noun[torch.arange(n), torch.randint(NUM_NOUNS, (n,), generator=g)] = 1.0
    verb[n - 1], noun[n - 1] = verb[0], noun[0]  # a positive pair across the two ranks' halves
    video = torch.randn(n, frames, 3, size, size, generator=g)
    mlm_ids, mlm_labels = mask_rows(ids, mask, list(range(seed * 1000, seed * 1000 + n)), tokenizer, 0.15)
    return {"video": video, "input_ids": ids, "attention_mask": mask, "verb": verb, "noun": noun,
            "mlm_input_ids": mlm_ids, "mlm_labels": mlm_labels}  # fmt: skip


def local_half(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    mine = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    return {k: v[mine] for k, v in batch.items()}


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in module.named_parameters()}


def reference_egonce(tokenizer: Tokenizer) -> dict:
    """Single-process EgoNCE-only step on the full batch (run before the process group exists)."""
    assert world_info() == (0, 1)
    model = build_model()
    module = PretrainModule(model, EGONCE_ONLY, tokenizer)
    out = module(global_batch(model, tokenizer, 2))
    out["loss"].backward()
    return {"loss": out["loss"].detach(), "grads": grads(module)}


def _egonce_ddp(rank: int, world_size: int, tokenizer: Tokenizer, ref: dict, gather_grad: str, factor: float):
    model = build_model()
    loss = dataclasses.replace(EGONCE_ONLY, gather_grad=gather_grad)
    module = PretrainModule(model, loss, tokenizer, seed=rank, dist=DistInfo(rank, world_size, 0, torch.device("cpu")))
    assert module.has_unused_parameters  # MLM / VTM heads get no gradient in this ablation
    ddp = DDP(module, find_unused_parameters=True)
    out = ddp(local_half(global_batch(model, tokenizer, world_size), rank))
    # every rank sees the same gathered batch: the loss is the full-batch loss (LOCAL scales only the gradient)
    torch.testing.assert_close(out["loss"].detach(), ref["loss"], rtol=1e-5, atol=1e-6)
    out["loss"].backward()
    got = grads(module)
    assert got.keys() == ref["grads"].keys()
    scale = max(g.abs().max().item() for g in ref["grads"].values() if g is not None)
    checked = 0
    for name, want in ref["grads"].items():
        if want is None:  # unused in the reference: DDP may leave it empty or fill zeros
            assert got[name] is None or not got[name].any(), f"{name} has a gradient but is unused"
            continue
        assert got[name] is not None, f"{name}: no gradient under DDP"
        torch.testing.assert_close(
            got[name], want * factor, rtol=1e-4, atol=1e-5 * scale * factor, msg=lambda m, n=name: f"{n}: {m}"
        )
        checked += 1
    assert checked > 50, checked


def scenario_egonce_full(rank: int, world_size: int, tokenizer: Tokenizer, ref: dict) -> None:
    """gather_grad=full: the DDP-averaged gradient equals the single-process full-batch gradient."""
    _egonce_ddp(rank, world_size, tokenizer, ref, "full", 1.0)


def scenario_egonce_local(rank: int, world_size: int, tokenizer: Tokenizer, ref: dict) -> None:
    """gather_grad=local (the release's): the full-batch gradient divided by the world size."""
    _egonce_ddp(rank, world_size, tokenizer, ref, "local", 1.0 / world_size)


def scenario_all_losses(rank: int, world_size: int, tokenizer: Tokenizer, ref: dict) -> None:
    """EgoNCE + MLM + VTM under DDP, both lower-layer modes: finite losses, every parameter a finite gradient."""
    for share in (True, False):
        model = build_model()
        cfg = dataclasses.replace(LossConfig(), share_lower_layers=share)
        info = DistInfo(rank, world_size, 0, torch.device("cpu"))
        module = PretrainModule(model, cfg, tokenizer, seed=1000 + rank, dist=info)  # per-rank negatives
        assert not module.has_unused_parameters
        ddp = DDP(module, find_unused_parameters=False)  # an unused parameter would fail the next iteration
        batch = local_half(global_batch(model, tokenizer, world_size), rank)
        for _ in range(2):
            module.zero_grad(set_to_none=True)
            out = ddp(batch)
            assert set(out) == {"loss", "egonce", "mlm", "vtm"}, set(out)
            assert all(torch.isfinite(v).all() for v in out.values()), {k: float(v) for k, v in out.items()}
            out["loss"].backward()
        missing = [n for n, g in grads(module).items() if g is None]
        assert not missing, f"share_lower_layers={share}: no gradient for {missing}"
        bad = [n for n, g in grads(module).items() if not torch.isfinite(g).all()]
        assert not bad, f"share_lower_layers={share}: non-finite gradient in {bad}"
        # DDP all-reduced: both ranks hold the same gradient
        flat = torch.cat([p.grad.flatten() for p in module.parameters()])
        everyone = [torch.empty_like(flat) for _ in range(world_size)]
        dist.all_gather(everyone, flat)
        torch.testing.assert_close(everyone[0], everyone[1], rtol=0, atol=0)


SCENARIOS: dict[str, tuple[Callable, Callable | None]] = {
    "egonce_full": (scenario_egonce_full, reference_egonce),
    "egonce_local": (scenario_egonce_local, reference_egonce),
    "all_losses": (scenario_all_losses, None),
}


def main(argv: list[str]) -> None:
    """Run the comma-separated scenarios in order; record each outcome in RESULT_FILE (JSON) as it finishes."""
    names, rank, world_size, init_method, tokenizer_dir, result_file = argv[0].split(","), *argv[1:6]
    rank, world_size = int(rank), int(world_size)
    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    references: dict[Callable, dict] = {}
    for name in names:  # single-process references first, while world_info() is (0, 1)
        make_ref = SCENARIOS[name][1]
        if make_ref is not None and make_ref not in references:
            references[make_ref] = make_ref(tokenizer)
    results: dict[str, str] = {}
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        assert world_info() == (rank, world_size)
        for name in names:
            run, make_ref = SCENARIOS[name]
            try:
                run(rank, world_size, tokenizer, references.get(make_ref, {}))
                dist.barrier()
            except Exception:
                results[name] = traceback.format_exc()
                raise
            else:
                results[name] = "ok"
            finally:
                Path(result_file).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

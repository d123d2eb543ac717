"""One rank of the multi-process loss checks; launched by test_loss_distributed.py (not a test module itself).

Usage: python dist_worker.py SCENARIO[,SCENARIO...] RANK WORLD_SIZE INIT_METHOD RESULT_FILE

Every rank builds the same seeded global batch, takes its own slice, runs the distributed code path (gloo, CPU,
DistributedDataParallel) and compares against a single-process full-batch reference it computes itself. A failed
check raises, so the process exits non-zero with the traceback on stderr.
"""

from __future__ import annotations

import copy
import json
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from egovlp.losses import (
    IGNORE_INDEX,
    AdaptiveMaxMarginLoss,
    EgoNCELoss,
    GatherGrad,
    MLMLoss,
    Replaced,
    adaptive_max_margin_loss,
    all_gather,
    all_gather_nograd,
    cosine_similarity_matrix,
    egonce_loss,
    global_label_count,
    sample_vtm_pairs,
    world_info,
)

LOCAL_BATCH = 3


class TwoTowers(nn.Module):
    """Tiny stand-in for the two towers: one linear map per modality."""

    def __init__(self, d_in: int = 5, d_out: int = 4) -> None:
        super().__init__()
        self.text = nn.Linear(d_in, d_out)
        self.video = nn.Linear(d_in, d_out)

    def forward(self, text_x: torch.Tensor, video_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(text_x), self.video(video_x)  # (B, d_out) each


def _global_batch(world_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n = world_size * LOCAL_BATCH
    text_in, video_in = torch.randn(n, 5, generator=gen), torch.randn(n, 5, generator=gen)
    verb = (torch.rand(n, 3, generator=gen) < 0.4).float()
    noun = (torch.rand(n, 3, generator=gen) < 0.4).float()
    relevancy = torch.rand(n, generator=gen)
    return text_in, video_in, verb, noun, relevancy


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in module.parameters()]


def _assert_grads(got: list[torch.Tensor], want: list[torch.Tensor], what: str) -> None:
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def scenario_egonce(rank: int, world_size: int) -> None:
    text_in, video_in, verb, noun, relevancy = _global_batch(world_size)
    mine = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)

    # forward of the gathers equals the concatenation in rank order
    torch.testing.assert_close(all_gather(text_in[mine].clone().requires_grad_()), text_in)
    torch.testing.assert_close(all_gather_nograd(verb[mine]), verb)
    # unequal shapes are refused with a clear message on every rank
    try:
        all_gather_nograd(torch.zeros(rank + 1, 2))
    except ValueError as err:
        assert "same shape on every rank" in str(err), err
    else:
        raise AssertionError("all_gather accepted tensors of different shapes")

    torch.manual_seed(0)
    reference = TwoTowers()
    out = egonce_loss(reference.text(text_in), reference.video(video_in), verb, noun)
    out.loss.backward()
    full_batch = _grads(reference)

    for mode, factor in ((GatherGrad.FULL, 1.0), (GatherGrad.LOCAL, 1.0 / world_size)):
        model = DDP(copy.deepcopy(reference))
        model.zero_grad(set_to_none=True)
        text_emb, video_emb = model(text_in[mine], video_in[mine])
        got = EgoNCELoss(gather_grad=mode)(text_emb, video_emb, verb[mine], noun[mine])
        torch.testing.assert_close(got.loss, out.loss.detach())  # every rank sees the global loss
        torch.testing.assert_close(got.positive_mask, out.positive_mask)
        got.loss.backward()
        _assert_grads(_grads(model.module), [g * factor for g in full_batch], f"EgoNCE gather_grad={mode.value}")

    # the EK-100 adaptive max-margin module under FULL gather: same gradient as the full batch
    reference.zero_grad(set_to_none=True)
    sim = cosine_similarity_matrix(reference.text(text_in), reference.video(video_in))
    adaptive_max_margin_loss(sim, relevancy, 0.2).backward()
    full_batch = _grads(reference)
    model = DDP(copy.deepcopy(reference))
    model.zero_grad(set_to_none=True)
    text_emb, video_emb = model(text_in[mine], video_in[mine])
    AdaptiveMaxMarginLoss(0.2)(text_emb, video_emb, relevancy[mine]).backward()
    _assert_grads(_grads(model.module), full_batch, "AdaptiveMaxMarginLoss gather_grad=full")


class TinyMLM(nn.Module):
    def __init__(self, vocab: int = 11, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(tokens)))  # (B, L, V)


def scenario_mlm(rank: int, world_size: int) -> None:
    assert world_size == 2
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 11, (world_size * 2, 6), generator=gen)
    targets = torch.randint(0, 11, (world_size * 2, 6), generator=gen)
    # rank 0 labels 2 tokens, rank 1 labels 9; then rank 0 labels none at all
    for counts in ((2, 9), (0, 5)):
        labels = torch.full_like(targets, IGNORE_INDEX)
        for r, count in enumerate(counts):
            rows = labels[2 * r : 2 * r + 2].view(-1)
            rows[:count] = targets[2 * r : 2 * r + 2].reshape(-1)[:count]
        torch.manual_seed(0)
        reference = TinyMLM()
        logits = reference(tokens)
        F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX).backward()
        full_batch = _grads(reference)

        model = DDP(copy.deepcopy(reference))
        model.zero_grad(set_to_none=True)
        mine = slice(2 * rank, 2 * rank + 2)
        assert int(global_label_count(labels[mine])) == sum(counts)
        loss = MLMLoss()(model(tokens[mine]), labels[mine])
        loss.backward()
        _assert_grads(_grads(model.module), full_batch, f"MLM with label counts {counts}")


def scenario_vtm(rank: int, world_size: int) -> None:
    text_in, video_in, verb, noun, _ = _global_batch(world_size, seed=2)
    mine = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    torch.manual_seed(0)
    model = TwoTowers()
    with torch.no_grad():
        text_emb, video_emb = model(text_in[mine], video_in[mine])
        out = EgoNCELoss(positives="verb")(text_emb, video_emb, verb[mine], noun[mine])  # gathered similarity, mask
    n = world_size * LOCAL_BATCH
    assert out.similarity.shape == (n, n)
    own = torch.arange(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    gen = torch.Generator().manual_seed(100 + rank)
    from_other_ranks = 0
    for _ in range(50):
        pairs = sample_vtm_pairs(out.similarity, out.positive_mask, rank, LOCAL_BATCH, generator=gen)
        assert int(pairs.labels.sum()) == LOCAL_BATCH // 2
        assert ((pairs.video_index >= 0) & (pairs.video_index < n)).all()
        assert ((pairs.text_index >= 0) & (pairs.text_index < n)).all()
        video_kept = pairs.replaced != Replaced.VIDEO
        text_kept = pairs.replaced != Replaced.TEXT
        assert torch.equal(pairs.video_index[video_kept], own[video_kept])  # global indices of this rank's items
        assert torch.equal(pairs.text_index[text_kept], own[text_kept])
        negative = pairs.labels == 0
        assert not out.positive_mask[pairs.text_index[negative], pairs.video_index[negative]].any()
        assert not (pairs.text_index[negative] == pairs.video_index[negative]).any()
        drawn = torch.cat([pairs.video_index[~video_kept], pairs.text_index[~text_kept]])
        from_other_ranks += int(((drawn < own[0]) | (drawn > own[-1])).sum())
    assert from_other_ranks > 0  # the pool is the gathered batch, not only this rank's items


SCENARIOS = {"egonce": scenario_egonce, "mlm": scenario_mlm, "vtm": scenario_vtm}


def main(argv: list[str]) -> None:
    """Run the comma-separated scenarios in order; record each outcome in RESULT_FILE (JSON) as it finishes.

    The first failure is recorded with its traceback and ends the process (non-zero exit), so the other rank's
    pending collectives fail fast on the closed connection instead of waiting for the process-group timeout.
    """
    scenarios, rank, world_size, init_method, result_file = (
        argv[0].split(","),
        int(argv[1]),
        int(argv[2]),
        argv[3],
        argv[4],
    )
    torch.set_num_threads(1)
    results: dict[str, str] = {}
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        assert world_info() == (rank, world_size)
        for name in scenarios:
            try:
                SCENARIOS[name](rank, world_size)
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

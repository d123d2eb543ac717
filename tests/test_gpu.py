"""CUDA smoke test (marked ``gpu``; skipped with "CUDA not available" elsewhere): the tiny model trains one step under
fp16 autocast with a gradient scaler and runs a bf16 forward, and both agree with fp32 on the same weights."""

import copy

import pytest
import torch
import torch.nn.functional as F

from egovlp.losses.egonce import egonce_loss
from egovlp.losses.vtm import vtm_loss
from egovlp.models import create_model, get_model_config

pytestmark = pytest.mark.gpu


def _batch(device: str, b: int = 4, frames: int = 4, length: int = 12):
    g = torch.Generator().manual_seed(1)
    video = torch.randn(b, frames, 3, 32, 32, generator=g)  # (B, F, 3, H, W), the tiny model's 32 px
    input_ids = torch.randint(3, 1000, (b, length), generator=g)
    input_ids[:, 0] = 0  # <s>
    attention_mask = torch.ones(b, length, dtype=torch.long)
    input_ids[1, 8:] = get_model_config("egovlpv2-tiny").text.pad_token_id  # one padded sentence
    attention_mask[1, 8:] = 0
    return video.to(device), input_ids.to(device), attention_mask.to(device)


def _loss(model, video, input_ids, attention_mask) -> torch.Tensor:
    """EgoNCE (InfoNCE positives) on the dual embeddings plus VTM on the fused pairs (all matched)."""
    v = model.encode_video(video)
    t = model.encode_text(input_ids, attention_mask)
    logits = model.vtm_logits(model.fuse(video, input_ids, attention_mask, video_out="cls"))  # (B, 2)
    labels = torch.ones(video.shape[0], dtype=torch.long, device=video.device)
    return egonce_loss(t, v, positives="none").loss + vtm_loss(logits, labels)


def test_fp16_amp_training_step_with_grad_scaler():
    torch.manual_seed(0)
    model = create_model("egovlpv2-tiny").to("cuda").train()
    for m in model.modules():  # dropout off: the fp16 and fp32 losses are compared on the same computation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = _batch("cuda")
    with torch.no_grad():
        reference = _loss(model, *batch).item()  # fp32 on the GPU
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(20):  # the scale starts high: steps whose gradients overflow are skipped and the scale halves
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            assert model.encode_video(batch[0]).dtype == torch.float16  # autocast is really on
            loss = _loss(model, *batch)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        scaler.step(optimizer)
        scaler.update()
        if finite:
            break
        assert scaler.get_scale() < scale  # an overflow lowers the scale ...
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # ... and skips the step
    assert finite, "no step with finite fp16 gradients"
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference, rel=2e-2, abs=2e-2)  # fp16 autocast computes the fp32 loss
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # the step was taken


def test_bf16_forward_matches_fp32_and_the_cpu():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    cpu_model = create_model("egovlpv2-tiny").eval()
    model = copy.deepcopy(cpu_model).to("cuda")
    video, input_ids, attention_mask = _batch("cuda")
    with torch.no_grad():
        v32 = model.encode_video(video)
        t32 = model.encode_text(input_ids, attention_mask)
        p32 = model.vtm_probability(video, input_ids, attention_mask)
        v_cpu = cpu_model.encode_video(video.cpu())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            v16 = model.encode_video(video)
            t16 = model.encode_text(input_ids, attention_mask)
            p16 = model.vtm_probability(video, input_ids, attention_mask)
    assert v16.dtype == torch.bfloat16
    torch.testing.assert_close(v32.cpu(), v_cpu, rtol=1e-3, atol=1e-4)  # the CUDA kernels compute the same model
    assert F.cosine_similarity(v16.float(), v32, dim=-1).min() > 0.99
    assert F.cosine_similarity(t16.float(), t32, dim=-1).min() > 0.99
    assert (p16.float() - p32).abs().max() < 0.05

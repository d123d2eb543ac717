"""Frame sampling and clip transforms: shapes, value ranges, one crop/flip for every frame, switchable flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egovlp.data.sampling import sample_times, worker_rng
from egovlp.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_clip_tensor,
    eval_transform,
    normalize,
    random_crop_box,
    train_transform,
)


def test_uniform_sampling_takes_segment_middles():
    np.testing.assert_allclose(sample_times(2.0, 6.0, 4, "uniform"), [2.5, 3.5, 4.5, 5.5])


def test_random_sampling_stays_in_segments_and_is_seeded():
    t = sample_times(2.0, 6.0, 4, "rand", np.random.default_rng(0))
    assert np.all((t >= [2, 3, 4, 5]) & (t < [3, 4, 5, 6]))
    np.testing.assert_array_equal(t, sample_times(2.0, 6.0, 4, "rand", np.random.default_rng(0)))


def test_sampling_clamps_and_degenerate_clips():
    np.testing.assert_allclose(sample_times(-1.0, 1.0, 2, "uniform"), [0.25, 0.75])  # start clamped at 0
    np.testing.assert_allclose(sample_times(3.0, 2.0, 3, "rand", np.random.default_rng(1)), [3.0] * 3)
    with pytest.raises(ValueError, match="sample must be"):
        sample_times(0, 1, 2, "middle")


def test_worker_rng_follows_torch_seed():
    torch.manual_seed(5)
    a = worker_rng().random()
    torch.manual_seed(5)
    assert worker_rng().random() == a


def _clip(frames: int = 4, height: int = 48, width: int = 64, same: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if same:
        return np.stack([base] * frames)
    return rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("make", [train_transform, eval_transform])
def test_output_shape_dtype_and_range(make):
    out = make(32)(_clip(), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    lo = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    hi = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    per_channel = out.transpose(0, 1).flatten(1)
    assert torch.all(per_channel.min(1).values >= lo - 1e-5) and torch.all(per_channel.max(1).values <= hi + 1e-5)


def test_layouts_thw3_and_t3hw_give_the_same_result():
    clip = _clip()
    a = train_transform(32)(clip, torch.Generator().manual_seed(3))
    b = train_transform(32)(torch.from_numpy(clip).permute(0, 3, 1, 2), torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="uint8"):
        as_clip_tensor(clip.astype(np.float32))


def test_one_crop_and_flip_for_all_frames():
    clip = _clip(frames=6, same=True)
    for seed in range(20):
        out = train_transform(24, scale=(0.3, 0.6))(clip, torch.Generator().manual_seed(seed))
        assert all(torch.equal(out[0], out[f]) for f in range(1, 6))


def test_flip_is_switchable():
    clip = _clip(frames=1, height=32, width=32)
    plain = normalize(as_clip_tensor(clip))
    flipped = plain.flip(-1)
    with_flip = [train_transform(32, scale=(1, 1))(clip, torch.Generator().manual_seed(s)) for s in range(16)]
    assert any(torch.allclose(o, flipped) for o in with_flip) and any(torch.allclose(o, plain) for o in with_flip)
    no_flip = [
        train_transform(32, scale=(1, 1), hflip=False)(clip, torch.Generator().manual_seed(s)) for s in range(16)
    ]
    assert all(torch.allclose(o, plain) for o in no_flip)


def test_random_crop_box_bounds():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_crop_box(48, 64, (0.5, 1.0), (3 / 4, 4 / 3), g)
        assert top >= 0 and top + h <= 48 and left >= 0 and left + w <= 64
        assert 0.45 <= h * w / (48 * 64) <= 1.0


def test_eval_transform_official_and_imagenet_crops():
    # An image whose left and right quarters are black and centre white: the official eval (resize 256, crop 256,
    # resize 224) keeps the centre square of the short side; crop=size keeps the middle 224/256 of it.
    clip = np.zeros((1, 64, 128, 3), np.uint8)
    clip[:, :, 32:96] = 255
    official = eval_transform(16)(clip)
    assert torch.allclose(official, normalize(torch.full((1, 3, 16, 16), 255, dtype=torch.uint8)))
    assert eval_transform(224).resize == 256 and eval_transform(224).crop == 256
    assert eval_transform(224, crop=224).crop == 224

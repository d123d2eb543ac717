"""EgoNCE against a naive double loop; positive-mask modes; numerical stability; InfoNCE special case."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from egovlp.losses import EgoNCELoss, egonce_loss, positive_mask


def _multi_hot(n: int, classes: int, per_item: int, gen: torch.Generator) -> torch.Tensor:
    tags = torch.zeros(n, classes)
    for i in range(n):
        k = int(torch.randint(1, per_item + 1, (1,), generator=gen))
        tags[i, torch.randperm(classes, generator=gen)[:k]] = 1.0
    return tags


def _naive_egonce(text, video, verb, noun, temperature, positives):
    """Straight from the definition, with explicit loops and float64."""
    n = text.shape[0]
    t = [text[i].double() / max(text[i].double().norm().item(), 1e-8) for i in range(n)]
    v = [video[i].double() / max(video[i].double().norm().item(), 1e-8) for i in range(n)]
    s = [[float(t[i] @ v[j]) / temperature for j in range(n)] for i in range(n)]

    def shares(tags, i, j):
        return any(tags[i, c] != 0 and tags[j, c] != 0 for c in range(tags.shape[1]))

    def is_pos(i, j):
        if i == j:
            return True
        if positives == "none":
            return False
        ok_v = shares(verb, i, j) if positives in ("verb_and_noun", "verb") else True
        ok_n = shares(noun, i, j) if positives in ("verb_and_noun", "noun") else True
        return ok_v and ok_n

    def direction(get):
        total = 0.0
        for i in range(n):
            denom = sum(math.exp(get(i, j)) for j in range(n))
            numer = sum(math.exp(get(i, j)) for j in range(n) if is_pos(i, j))
            total += -math.log(numer / denom)
        return total / n

    t2v = direction(lambda i, j: s[i][j])
    v2t = direction(lambda i, j: s[j][i])
    mask = torch.tensor([[is_pos(i, j) for j in range(n)] for i in range(n)])
    return t2v, v2t, mask


@pytest.mark.parametrize("positives", ["verb_and_noun", "verb", "noun", "none"])
def test_egonce_matches_naive_loop(positives):
    gen = torch.Generator().manual_seed(0)
    n, d = 9, 6
    text, video = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    verb, noun = _multi_hot(n, 4, 2, gen), _multi_hot(n, 5, 2, gen)
    # temperature 0.5 keeps exp() in float64 range for the naive loop
    out = egonce_loss(text, video, verb, noun, temperature=0.5, positives=positives)
    t2v, v2t, mask = _naive_egonce(text, video, verb, noun, 0.5, positives)
    assert torch.equal(out.positive_mask, mask)
    assert out.positive_mask.dtype == torch.bool and torch.equal(out.positive_mask, out.positive_mask.T)
    assert out.t2v_loss.item() == pytest.approx(t2v, rel=1e-5)
    assert out.v2t_loss.item() == pytest.approx(v2t, rel=1e-5)
    assert out.loss.item() == pytest.approx(t2v + v2t, rel=1e-5)
    cos = F.normalize(text, dim=1) @ F.normalize(video, dim=1).T
    torch.testing.assert_close(out.similarity, cos)


def test_modes_give_different_masks():
    verb = torch.tensor([[1, 0], [1, 0], [0, 1]])
    noun = torch.tensor([[1, 0], [0, 1], [1, 0]])
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.equal(positive_mask(3, verb, noun, "none"), eye)
    assert torch.equal(positive_mask(3, verb, noun, "verb_and_noun"), eye)  # no pair shares both
    vm = positive_mask(3, verb, noun, "verb")
    assert vm[0, 1] and vm[1, 0] and not vm[0, 2]
    nm = positive_mask(3, verb, noun, "noun")
    assert nm[0, 2] and nm[2, 0] and not nm[0, 1]
    both = positive_mask(3, torch.tensor([[1, 0], [1, 0], [0, 1]]), torch.tensor([[1, 1], [0, 1], [1, 0]]))
    assert both[0, 1] and not both[0, 2] and not both[1, 2]


def test_infonce_equals_cross_entropy_on_diagonal():
    gen = torch.Generator().manual_seed(1)
    text, video = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    out = egonce_loss(text, video, positives="none", temperature=0.05)
    logits = (F.normalize(text, dim=1) @ F.normalize(video, dim=1).T) / 0.05
    target = torch.arange(7)
    torch.testing.assert_close(out.t2v_loss, F.cross_entropy(logits, target))
    torch.testing.assert_close(out.v2t_loss, F.cross_entropy(logits.T, target))


def test_gradients_finite_with_large_logits():
    gen = torch.Generator().manual_seed(2)
    n = 16
    text = (torch.randn(n, 8, generator=gen) * 1e3).requires_grad_()
    video = (torch.randn(n, 8, generator=gen) * 1e3).requires_grad_()
    verb, noun = _multi_hot(n, 3, 1, gen), _multi_hot(n, 3, 1, gen)
    for temperature in (1e-3, 1e-5):
        out = egonce_loss(text, video, verb, noun, temperature=temperature)
        assert torch.isfinite(out.loss)
        text.grad = video.grad = None
        out.loss.backward()
        assert torch.isfinite(text.grad).all() and torch.isfinite(video.grad).all()


def test_zero_embedding_does_not_nan():
    text = torch.zeros(3, 4, requires_grad=True)
    video = torch.randn(3, 4)
    out = egonce_loss(text, video, positives="none")
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(text.grad).all()


def test_gradient_matches_naive_autograd():
    """Autograd of the log-sum-exp form equals autograd of the naive log(sum(softmax * mask))."""
    gen = torch.Generator().manual_seed(3)
    n = 10
    text = torch.randn(n, 6, generator=gen, requires_grad=True)
    video = torch.randn(n, 6, generator=gen, requires_grad=True)
    verb, noun = _multi_hot(n, 3, 2, gen), _multi_hot(n, 3, 2, gen)
    out = egonce_loss(text, video, verb, noun, temperature=0.1)
    g_fast = torch.autograd.grad(out.loss, (text, video))
    s = (F.normalize(text, dim=1) @ F.normalize(video, dim=1).T) / 0.1
    m = out.positive_mask.float()
    naive = -(s.softmax(1) * m).sum(1).log().mean() - (s.T.softmax(1) * m).sum(1).log().mean()
    g_naive = torch.autograd.grad(naive, (text, video))
    for a, b in zip(g_fast, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_module_single_process_equals_function():
    gen = torch.Generator().manual_seed(4)
    text, video = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    verb, noun = _multi_hot(5, 3, 2, gen), _multi_hot(5, 3, 2, gen)
    out_m = EgoNCELoss(temperature=0.07, positives="verb")(text, video, verb, noun)
    out_f = egonce_loss(text, video, verb, noun, temperature=0.07, positives="verb")
    torch.testing.assert_close(out_m.loss, out_f.loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positives": "verbs"}, "positives must be one of"),
        ({"positives": "verb", "verb": None}, "needs the multi-hot verb"),
        ({"positives": "noun", "noun": None}, "needs the multi-hot noun"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"verb": torch.ones(3, 2), "noun": torch.ones(3, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        egonce_loss(torch.randn(3, 4), torch.randn(3, 4), **args)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        egonce_loss(torch.randn(3, 4), torch.randn(4, 4), positives="none")
    with pytest.raises(ValueError, match="rows"):
        positive_mask(3, torch.ones(4, 2), torch.ones(3, 2))

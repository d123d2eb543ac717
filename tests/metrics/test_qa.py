"""EgoTaskQA accuracy: hand-computed cases, and the per-reasoning-type counting of multi-type questions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egovlp.metrics.qa import egotaskqa_accuracy, split_reasoning_types

# q0 wrong (two reasoning types), q1 wrong, q2 right (two types), q3 wrong, q4 right
ANSWERS = [3, 1, 0, 1, 7]
PREDICTED = [2, 0, 0, 0, 7]
TYPES = ["open", "open", "binary", "binary", "open"]
REASONING = ["descriptive$intent", "descriptive", "intent$world", "world", "predictive"]
ALL_TYPES = ["descriptive", "intent", "world", "predictive", "counterfactual"]


def test_hand_computed_accuracy_per_group() -> None:
    m = egotaskqa_accuracy(np.array(PREDICTED), np.array(ANSWERS), TYPES, REASONING, ALL_TYPES)
    assert (m.overall.correct, m.overall.total) == (2, 5)
    assert {k: (v.correct, v.total) for k, v in m.by_type.items()} == {"open": (1, 3), "binary": (1, 2)}
    by_reasoning = {k: (v.correct, v.total) for k, v in m.by_reasoning.items()}
    assert by_reasoning == {
        "descriptive": (0, 2), "intent": (1, 2), "world": (1, 2), "predictive": (1, 1), "counterfactual": (0, 0),
    }  # fmt: skip
    assert list(m.by_reasoning) == ALL_TYPES  # the file's order
    d = m.to_dict()
    assert d["All"] == pytest.approx(40.0) and d["All/count"] == 5
    assert d["open"] == pytest.approx(100 / 3) and d["binary"] == pytest.approx(50.0)
    assert d["reasoning/intent"] == pytest.approx(50.0) and d["reasoning/intent/count"] == 2
    # a type without questions: its count, not an accuracy of 0 (the release prints 0)
    assert d["reasoning/counterfactual"] is None and d["reasoning/counterfactual/count"] == 0


def test_a_multi_type_question_counts_for_every_type() -> None:
    m = egotaskqa_accuracy(np.array(PREDICTED), np.array(ANSWERS), TYPES, REASONING)
    intent, world = m.by_reasoning["intent"].accuracy, m.by_reasoning["world"].accuracy
    assert intent is not None and world is not None
    assert intent == pytest.approx(1 / 2)  # q0 (wrong) and q2 (right)
    assert world == pytest.approx(1 / 2)  # q2 (right) and q3 (wrong)
    first_type_only = {"intent": 1 / 1, "world": 0 / 1}  # wrong: q0 counted for descriptive only, q2 for intent
    assert abs(intent - first_type_only["intent"]) > 0.1 and abs(world - first_type_only["world"]) > 0.1
    assert sum(v.total for v in m.by_reasoning.values()) == 7  # 5 questions, 7 memberships
    assert "counterfactual" not in m.by_reasoning  # without the list: only the types seen


def test_logits_lists_and_duplicates() -> None:
    logits = torch.zeros(5, 8)
    logits[torch.arange(5), torch.tensor(PREDICTED)] = 1.0
    logits[1, 1] = 1.0  # a tie for q1 between 0 (wrong) and 1 (right): the first index wins
    split = [r.split("$") for r in REASONING]
    m = egotaskqa_accuracy(logits, torch.tensor(ANSWERS), TYPES, split)
    assert m.overall.correct == 2 and m.by_reasoning["intent"].total == 2
    assert split_reasoning_types("a$a$") == ["a", "a"]  # listed twice counts twice (the release's calculator)
    dup = egotaskqa_accuracy([1], [1], ["open"], ["a$a"])
    assert (dup.by_reasoning["a"].correct, dup.by_reasoning["a"].total) == (2, 2)


def test_question_types_always_reported() -> None:
    m = egotaskqa_accuracy([1, 2], [1, 0], ["open", "open"], ["x", "y"])
    assert m.by_type["binary"].total == 0 and m.by_type["binary"].accuracy is None
    assert m.to_dict()["binary"] is None and m.to_dict(percent=False)["open"] == 0.5


def test_errors() -> None:
    with pytest.raises(ValueError, match="question 1: reasoning type 'novel' is not in all_reasoning_types"):
        egotaskqa_accuracy([0, 0], [0, 0], ["open", "open"], ["world", "world$novel"], ["world"])
    with pytest.raises(ValueError, match="disagree on N"):
        egotaskqa_accuracy([0, 0], [0], ["open"], ["world"])

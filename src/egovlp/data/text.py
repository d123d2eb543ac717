"""Ego4D narration cleaning.

Ego4D narrations carry annotation tags: ``#C`` before the camera wearer ("#C C picks a bag"), ``#O`` before another
person ("#O man X holds a cup"), ``#unsure`` where the annotator could not tell an object, and occasional tags such
as ``#summary``. :func:`clean_narration` turns them into plain text:

* ``"#C C picks up the red cube"`` -> ``"C picks up the red cube"`` (``"picks up the red cube"`` with
  ``drop_actor=True``);
* ``"#O man X holds #unsure"`` -> ``"man X holds something"``;
* any other ``#tag`` is dropped; whitespace is collapsed.
"""

from __future__ import annotations

import re

__all__ = ["clean_narration"]

_UNSURE = re.compile(r"#\s*unsure\b", re.IGNORECASE)
_TAG = re.compile(r"#\s*[A-Za-z]\w*")
_ACTOR_TAG = re.compile(r"^\s*#\s*[CcOo]\b\s*")
_SPACES = re.compile(r"\s+")


def clean_narration(text: str, unsure: str = "something", drop_actor: bool = False) -> str:
    """Plain text of an Ego4D narration (see the module docstring).

    Args:
        unsure: what replaces ``#unsure`` ("" drops it).
        drop_actor: also drop the camera wearer's letter ``C`` after ``#C`` ("picks up the cube").
    """
    text = str(text)
    had_camera_tag = bool(re.match(r"^\s*#\s*[Cc]\b", text))
    text = _ACTOR_TAG.sub("", text)
    text = _UNSURE.sub(unsure, text)
    text = _TAG.sub("", text)
    text = text.replace("#", " ")
    text = _SPACES.sub(" ", text).strip()
    if drop_actor and had_camera_tag and re.match(r"^[Cc]\b", text):
        text = text[1:].lstrip()
    return text

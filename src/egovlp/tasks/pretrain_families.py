"""Which pre-training runs for a model family: ``egovlp pretrain`` looks the family of the configured model up here.

EgoVLPv2 (and the dual families built by its class) pre-train with :mod:`egovlp.tasks.pretrain`; other families name
the module that holds their config schema and :class:`~egovlp.train.task.Task`. The command line holds no
per-family code.
"""

from __future__ import annotations

import importlib

#: family -> (module, config schema class, task class); families not listed use EgoVLPv2's pre-training
FAMILY_PRETRAINING: dict[str, tuple[str, str, str]] = {
    "allinone": ("egovlp.tasks.pretrain_allinone", "AllInOnePretrainConfig", "AllInOnePretrainTask"),
}
DEFAULT = ("egovlp.tasks.pretrain", "PretrainConfig", "PretrainTask")


def pretraining_for(family: str) -> tuple[type, type]:
    """``(config schema, task class)`` of the pre-training of ``family``."""
    module, schema, task = FAMILY_PRETRAINING.get(family, DEFAULT)
    mod = importlib.import_module(module)
    return getattr(mod, schema), getattr(mod, task)

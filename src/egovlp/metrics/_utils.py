"""Input handling shared by the metric functions: numpy arrays or torch tensors in, numpy arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU; bfloat16 becomes float32).

    Raises:
        ValueError: ``x`` does not have ``ndim`` dimensions.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr

"""Input handling shared by the metric functions: numpy arrays or torch tensors in, numpy arrays out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch

Array: TypeAlias = "np.ndarray | torch.Tensor"  # what the metric functions accept (a tensor is moved to the CPU)


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


def check_no_nan(x: Any, name: str) -> None:
    """Raise when ``x`` holds NaN, saying how many entries (and, for a matrix, how many rows) are NaN.

    Raises:
        ValueError: e.g. ``"similarity contains NaN: 3 of 12 entries, in 2 of 3 rows"``.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fc":
        return
    nan = np.isnan(x)
    count = int(nan.sum())
    if not count:
        return
    where = f"{count} of {x.size} entries"
    if x.ndim == 2:
        where += f", in {int(nan.any(axis=1).sum())} of {x.shape[0]} rows"
    raise ValueError(f"{name} contains NaN: {where}")

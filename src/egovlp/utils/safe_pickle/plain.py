"""Plain pickles and ``.npz`` archives of numpy data (the EK-100 relevancy matrix, BUTD detection records), read
without ``allow_pickle=True``: only numpy arrays / scalars / dtypes and plain Python containers are rebuilt."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from egovlp.errors import DataError
from egovlp.utils.safe_pickle.engine import unpickle
from egovlp.utils.safe_pickle.policy import plain_policy


def load_pickle_restricted(path: str | Path, allow_numpy: bool = True) -> Any:
    """Load a plain pickle of numpy arrays / scalars and Python containers without executing pickle code.

    Args:
        path: a pickle file, e.g. ``caption_relevancy_EPIC_100_retrieval_test.pkl`` (a float array (9668, 3842)).
        allow_numpy: allow numpy array / scalar / dtype reconstruction (object and structured dtypes always refused).

    Raises:
        RefusedGlobalError: the pickle names any other global (the message names the global and the file).
        DataError: malformed pickle data.
    """
    path = Path(path)
    return unpickle(path.read_bytes(), plain_policy(allow_numpy), source=str(path), error=DataError)


def _object_dtype_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` from an ``.npy`` header (file position after it) if the array holds Python objects."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # format 3.0 only exists for utf-8 field names; numpy itself refuses any object dtype below
        return None
    return (tuple(shape), dtype) if dtype.hasobject else None


def _read_npy(fh: IO[bytes], source: str) -> np.ndarray:
    """One ``.npy`` member: plain arrays by numpy (``allow_pickle=False``), object arrays by restricted unpickling."""
    try:
        header = _object_dtype_header(fh)
        if header is None:
            fh.seek(0)
            return np.lib.format.read_array(fh, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # numpy's errors for bad magic, headers and truncated data
        raise DataError(f"{source}: not a readable .npy record: {exc}") from exc
    shape, dtype = header
    array = unpickle(fh.read(), plain_policy(allow_object_arrays=True), source=source, error=DataError)
    if not (isinstance(array, np.ndarray) and array.dtype == dtype and array.shape == shape):
        raise DataError(f"{source}: pickled data is not the {dtype} array of shape {shape} its header announces")
    return array


def load_npz_safely(path: str | Path) -> dict[str, Any]:
    """Read an ``np.savez`` / ``np.savez_compressed`` archive without ``allow_pickle=True``.

    Plain arrays are read by numpy itself; arrays of dtype ``object`` (e.g. the BUTD detections' ``info`` field:
    a dict pickled in a 0-d object array) go through the restricted unpickler, so their elements can only be numpy
    arrays / scalars and plain Python containers.

    Returns:
        ``{name: array}`` with the ``.npy`` suffix dropped, as ``np.load(path, allow_pickle=True)`` gives it (a 0-d
        object array's dict is ``out[name].item()``).

    Raises:
        RefusedGlobalError: an object array names any other global (the message names it and ``file:member``).
        DataError: not a zip archive, a member that is not an ``.npy`` record, or malformed pickle data.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not an .npz archive: {exc}") from exc
    out: dict[str, Any] = {}
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            source = f"{path}:{info.filename}"
            if not info.filename.endswith(".npy"):
                raise DataError(f"{source}: not an .npy record (an .npz archive holds only .npy members)")
            with zf.open(info) as fh:
                out[info.filename[: -len(".npy")]] = _read_npy(fh, source)
    return out

"""Reading a ``torch.save`` zip archive (``<archive>/data.pkl`` + raw storages ``<archive>/data/<key>``) without
``torch.load``: the records, their byte order and the storages that persistent ids name."""

from __future__ import annotations

import logging
import sys
import zipfile
from pathlib import Path
from typing import Any, NoReturn, cast

import torch

from egovlp.errors import CheckpointError
from egovlp.utils.safe_pickle.engine import unpickle
from egovlp.utils.safe_pickle.policy import checkpoint_policy
from egovlp.utils.safe_pickle.records import Token, bad

logger = logging.getLogger(__name__)

# Legacy (pre-1.6, non-zip) torch files start with a protocol-2 pickle of this magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _record(zf: zipfile.ZipFile, name: str, archive_size: int) -> zipfile.ZipInfo:
    """A zip member that torch could have written: uncompressed, and no larger than the archive (no zip bombs)."""
    try:
        info = zf.getinfo(name)
    except KeyError as exc:
        raise bad(f"record {name!r} is missing from the archive") from exc
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > archive_size:
        raise bad(f"record {name!r} is compressed or larger than the archive (torch.save stores records as is)")
    return info


def _load_storage(
    zf: zipfile.ZipFile, prefix: str, token: Token, key: str, numel: int, byteorder: str, archive_size: int
) -> torch.storage.TypedStorage:
    """Read ``<prefix>data/<key>`` into a CPU TypedStorage of ``token.dtype``, byte-swapped to the native order."""
    dtype = token.dtype
    assert dtype is not None
    untyped = token.qualname.endswith("UntypedStorage")
    nbytes = numel * (1 if untyped else dtype.itemsize)
    info = _record(zf, f"{prefix}data/{key}", archive_size)
    if info.file_size != nbytes:
        raise bad(f"storage 'data/{key}' holds {info.file_size} bytes, its tensor needs {nbytes}")
    buf = torch.empty(nbytes, dtype=torch.uint8)
    view = buf.numpy().data
    with cast(zipfile.ZipExtFile, zf.open(info)) as fh:
        done = 0
        while done < nbytes:
            n = fh.readinto(view[done:])
            if not n:
                raise bad(f"storage 'data/{key}' is truncated")
            done += n
    swap = dtype.itemsize // (2 if dtype.is_complex else 1)
    if byteorder != sys.byteorder and swap > 1 and not untyped:
        buf.numpy().view(f"u{swap}").byteswap(inplace=True)
    return torch.storage.TypedStorage(wrap_storage=buf.untyped_storage(), dtype=dtype, _internal=True)


def _archive_prefix(zf: zipfile.ZipFile, source: str) -> str:
    names = zf.namelist()
    if any(n.endswith("/constants.pkl") for n in names):
        raise CheckpointError(f"{source}: a TorchScript archive, not a torch.save checkpoint")
    found = [n[: -len("data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(found) == 1:
        return found[0]
    raise CheckpointError(f"{source}: zip archive without exactly one '<archive>/data.pkl'; not a torch.save file")


def _byteorder(zf: zipfile.ZipFile, prefix: str, source: str) -> str:
    try:
        raw = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
    except KeyError:
        return "little"  # torch's own default for archives written before the record existed
    if raw not in ("little", "big"):
        raise CheckpointError(f"{source}: unknown byte order record {raw!r}")
    return raw


def _refuse_non_zip(path: Path) -> NoReturn:
    with open(path, "rb") as fh:
        legacy = fh.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC
    if legacy:
        raise CheckpointError(
            f"{path}: legacy (pre-1.6, non-zip) torch serialization format, not supported by the restricted "
            "loader; re-save it with torch.save (torch >= 1.6) in a trusted environment first"
        )
    raise CheckpointError(f"{path}: not a torch.save zip archive")


def load_torch_checkpoint(path: str | Path, *, allow_opaque_calls: bool = False) -> dict[str, Any]:
    """Load a ``torch.save`` zip checkpoint onto the CPU without executing any pickle code.

    Args:
        path: a file written by ``torch.save`` (zip format, torch >= 1.6): an official EgoVLP(v2) / Frozen-in-Time
            ``.pth`` or a PyTorch-Lightning ``.ckpt``.
        allow_opaque_calls: record calls of unknown globals as inert :class:`OpaqueObject` instead of raising.

    Returns:
        The saved top-level dict, e.g. ``{'arch', 'epoch', 'state_dict', 'optimizer', 'scheduler', 'monitor_best',
        'config'}``. Tensors are real CPU tensors (dtype, views, strides and shared storages as saved); objects of
        unknown classes (the official ``config``) are :class:`OpaqueObject` records; Lightning's ``AttributeDict``
        and sacred's read-only containers are :class:`InertDict` / :class:`InertList` (a dict / list).

    Raises:
        RefusedGlobalError: the pickle names a refused global, or calls an unknown one (message names it).
        CheckpointError: a legacy (non-zip) torch file, a TorchScript archive, or malformed records.
    """
    path = Path(path)
    source = str(path)
    if not zipfile.is_zipfile(path):
        _refuse_non_zip(path)
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        prefix = _archive_prefix(zf, source)
        byteorder = _byteorder(zf, prefix, source)
        storages: dict[str, torch.storage.TypedStorage] = {}

        def load_storage(token: Token, key: str, numel: int) -> torch.storage.TypedStorage:
            if key not in storages:  # tensors sharing a storage share it again, as torch.load does
                storages[key] = _load_storage(zf, prefix, token, key, numel, byteorder, size)
            return storages[key]

        try:
            data = zf.read(_record(zf, prefix + "data.pkl", size))
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        policy = checkpoint_policy(allow_opaque_calls)
        obj = unpickle(data, policy, source=source, error=CheckpointError, load_storage=load_storage)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict at the top level of the checkpoint, got {type(obj).__name__}")
    logger.debug("%s: loaded %d storages", source, len(storages))
    return obj

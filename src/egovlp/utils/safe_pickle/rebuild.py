"""Our own small re-implementations of the globals a pickle may name: each checks its arguments, none imports or
calls the function the pickle names. The tables at the end map ``(module, name)`` to them (:mod:`.policy` picks
which tables a loader gets)."""

from __future__ import annotations

import logging
import math
import pathlib
import pickle
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from egovlp.utils.safe_pickle.records import (
    INERT_CONTAINERS,
    NDARRAY,
    OBJECT,
    PARAMETER,
    TENSOR,
    OpaqueObject,
    Token,
    bad,
    check_type,
    ints,
)

logger = logging.getLogger(__name__)

Globals = dict[tuple[str, str], Any]

STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}  # fmt: skip


# ---------------------------------------------------------------- torch tensors
def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor viewing ``storage`` (TypedStorage from persistent_load) with bounds checked against the storage."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise bad(f"tensor storage must come from the archive, got {type(storage).__name__}")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or type(offset) is not int or offset < 0:
        raise bad(f"tensor dtype/offset {dtype!r}/{offset!r}")
    size, stride = ints(size, "tensor size"), ints(stride, "tensor stride")
    if len(size) != len(stride):
        raise bad(f"size {size} and stride {stride} differ in length")
    available = storage._untyped_storage.nbytes() // dtype.itemsize
    end = offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if end > available:
        raise bad(f"tensor view (offset {offset}, size {size}, stride {stride}) exceeds its storage of {available}")
    return torch.empty((0,), dtype=dtype).set_(storage._untyped_storage, offset, size, stride)


def _finish(t: torch.Tensor, requires_grad: Any, hooks: Any, metadata: Any = None) -> torch.Tensor:
    if type(requires_grad) is not bool:
        raise bad(f"requires_grad must be a bool, got {requires_grad!r}")
    if requires_grad and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    if metadata:
        if not (isinstance(metadata, dict) and all(type(k) is str and type(v) is bool for k, v in metadata.items())):
            raise bad(f"tensor metadata {metadata!r}")
        torch._utils.set_tensor_metadata(t, metadata)
    if hooks:
        logger.warning("ignoring %d saved backward hook(s) on a tensor", len(hooks))
    return t


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _make_tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, metadata: Any = None
) -> torch.Tensor:
    return _finish(_make_tensor(storage, offset, size, stride), requires_grad, hooks, metadata)


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any, metadata: Any = None
) -> torch.Tensor:
    return _finish(_make_tensor(storage, offset, size, stride, dtype), requires_grad, hooks, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise bad(f"parameter from {type(data).__name__} / {requires_grad!r}")
    if state:
        logger.debug("ignoring saved Python attributes of a parameter: %s", sorted(map(str, state)))
    return torch.nn.Parameter(data, requires_grad=requires_grad)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if func not in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3) or not isinstance(args, tuple):
        raise bad(f"_rebuild_from_type_v2 with {func!r}")
    t = func(*args)
    if new_type is PARAMETER:
        return torch.nn.Parameter(t, requires_grad=t.requires_grad)
    if new_type is not TENSOR:
        logger.warning("tensor subclass %r loaded as a plain tensor", new_type)
    return t


def _torch_device(*args: Any) -> torch.device:
    if not (1 <= len(args) <= 2 and all(type(a) in (str, int) for a in args)):
        raise bad(f"torch.device{args!r}")
    return torch.device(*args)


@lru_cache(maxsize=1)
def torch_globals() -> Globals:
    """Tensor / parameter rebuilds, storage classes (tokens inside persistent ids), Size, device, dtypes, layouts."""
    out: Globals = {("torch._utils", f.__name__): f for f in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3)}
    out[("torch._utils", "_rebuild_parameter")] = out[("torch._utils", "_rebuild_parameter_with_state")] = (
        _rebuild_parameter
    )
    for mod in ("torch._tensor", "torch.tensor"):
        out[(mod, "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    out.update({("torch", "Tensor"): TENSOR, ("torch._tensor", "Tensor"): TENSOR})
    out[("torch.nn.parameter", "Parameter")] = PARAMETER
    out[("torch", "Size")] = lambda dims: torch.Size(ints(dims, "torch.Size"))
    out[("torch", "device")] = _torch_device
    for name in dir(torch):  # dtypes, layouts and memory formats are inert singletons
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            out[("torch", name)] = value
    for mod in ("torch", "torch.storage", "torch.cuda"):
        out.update({(mod, name): Token(f"torch.{name}", dtype) for name, dtype in STORAGE_DTYPES.items()})
    return out


# ---------------------------------------------------------------- numpy
def _dtype_kinds(allow_object: bool) -> str:
    return "biufcSU" + ("O" if allow_object else "")


def check_dtype_state(dt: np.dtype, state: Any) -> None:
    """Accept only the state numpy itself writes for a plain dtype (byte order may differ)."""
    own = dt.__reduce__()[2]
    ok = isinstance(state, tuple) and len(state) == len(own) == 8 and state[1] in ("<", ">", "|", "=")
    if not (ok and state[0] == own[0] and state[2:] == own[2:]):
        raise bad(f"numpy dtype state {state!r}")


def check_array_state(state: Any, allow_object: bool) -> None:
    """Accept ``ndarray.__setstate__`` input whose data fits its shape: raw bytes, or (object arrays) a list."""
    body = state[1:] if isinstance(state, tuple) and len(state) == 5 else state
    if not (isinstance(body, tuple) and len(body) == 4):
        raise bad("numpy array state")
    shape, dt, fortran, data = body
    shape = ints(shape, "numpy array shape")
    if not isinstance(dt, np.dtype) or (dt.hasobject and not allow_object) or type(fortran) is not bool:
        raise bad(f"numpy array dtype {dt!r}")
    if dt.hasobject:  # the elements were unpickled under the same restrictions; numpy only stores them
        if not (isinstance(data, list) and len(data) == math.prod(shape) and dt.kind == "O"):
            raise bad(f"numpy object array data for shape {shape}")
    elif not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape) * dt.itemsize:
        raise bad(f"numpy array data for shape {shape} and dtype {dt}")


def _np_reconstruct(subtype: Any, shape: Any, code: Any) -> np.ndarray:
    if subtype is not NDARRAY:
        raise bad(f"numpy array of subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)  # filled by BUILD once its state is checked


def _np_scalar(dt: Any, data: Any = None) -> np.generic:
    if not isinstance(dt, np.dtype) or dt.hasobject or not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise bad(f"numpy scalar of dtype {dt!r}")
    return np.frombuffer(data, dtype=dt)[0]


def _np_frombuffer(buf: Any, dt: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    shape = ints(shape, "numpy array shape")
    if not isinstance(dt, np.dtype) or dt.hasobject or order not in ("C", "F"):
        raise bad(f"numpy buffer array of dtype {dt!r}")
    check_type(buf, (bytes, bytearray))
    if len(buf) != math.prod(shape) * dt.itemsize:
        raise bad(f"numpy buffer of {len(buf)} bytes for shape {shape} and dtype {dt}")
    return np.frombuffer(bytearray(buf), dtype=dt).reshape(shape, order=order)


def numpy_globals(allow_object: bool = False) -> Globals:
    """numpy array / scalar / dtype reconstruction: plain numeric and string dtypes, plus ``object`` if asked."""

    def np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
        if not isinstance(spec, str) or len(spec) > 16:
            raise bad(f"numpy dtype spec {spec!r}")
        dt = np.dtype(spec, align=bool(align), copy=True)  # a fresh object: BUILD must not touch numpy's singletons
        if dt.kind not in _dtype_kinds(allow_object) or dt.fields is not None or dt.subdtype is not None:
            raise bad(f"numpy dtype {spec!r} (only plain numeric and string dtypes are allowed)")
        return dt

    out: Globals = {("numpy", "ndarray"): NDARRAY, ("numpy", "dtype"): np_dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = _np_reconstruct
        out[(f"{core}.multiarray", "scalar")] = _np_scalar
        out[(f"{core}.numeric", "_frombuffer")] = _np_frombuffer
    return out


# ---------------------------------------------------------------- plain Python data, copyreg, pathlib
def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise bad(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    return bytearray(_codecs_encode(data, encoding) if isinstance(data, str) else check_type(data, bytes))


def plain_globals() -> Globals:
    """``OrderedDict``, ``set``/``frozenset``/``slice``/``complex``/``bytearray``, ``_codecs.encode`` (protocol-2
    bytes): built from checked arguments only."""

    def collection(kind: type) -> Callable[..., Any]:
        return lambda items=(): kind(check_type(items, (list, tuple, set, frozenset)))

    return {
        ("collections", "OrderedDict"): lambda items=(): OrderedDict(check_type(items, (list, tuple, dict))),
        ("builtins", "set"): collection(set),
        ("builtins", "frozenset"): collection(frozenset),
        ("builtins", "slice"): lambda *a: slice(*(check_type(v, (int, type(None))) for v in a)),
        ("builtins", "complex"): lambda *a: complex(*(check_type(v, (int, float)) for v in a)),
        ("builtins", "bytearray"): _bytearray,
        ("_codecs", "encode"): _codecs_encode,
    }


def new_record(cls: Any, args: Any, kwargs: Any = None) -> Any:
    """An instance of a stub class (:class:`OpaqueObject` record) or of an inert container class (a dict or list
    subclass filled from at most one dict / list argument); anything else is refused."""
    if not isinstance(args, tuple) or not isinstance(kwargs or {}, dict):
        raise bad(f"arguments {args!r} / {kwargs!r} for {cls!r}")
    if isinstance(cls, type) and issubclass(cls, OpaqueObject):
        return cls.__new__(cls, *args, **(kwargs or {}))
    if isinstance(cls, type) and issubclass(cls, INERT_CONTAINERS):
        base = dict if issubclass(cls, dict) else list
        if kwargs or len(args) > 1 or (args and not isinstance(args[0], base)):
            raise bad(f"{cls.module}.{cls.name}{args!r} (takes at most one {base.__name__})")
        return cls(*args)  # our own dict / list subclass: a copy of the argument's items, nothing else runs
    raise bad(f"instance of {cls!r} (only unknown classes become inert stubs)")


def object_globals() -> Globals:
    """copyreg helpers (protocols 0/1, stub classes only) and pathlib classes rebuilt as inert pure paths."""

    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)) or base is not OBJECT:
            raise bad(f"copyreg._reconstructor({cls!r}, {base!r}) (only stub classes on object)")
        return cls.__new__(cls, *(() if state is None else (state,)))

    def pure(kind: type) -> Callable[..., Any]:
        return lambda *parts: kind(*(check_type(p, str) for p in parts))

    out: Globals = {("builtins", "object"): OBJECT, ("copyreg", "_reconstructor"): reconstructor}
    out[("copyreg", "__newobj__")] = lambda cls, *args: new_record(cls, args)
    for mod in ("pathlib", "pathlib._local"):
        out.update({(mod, n): pure(pathlib.PurePosixPath) for n in ("Path", "PosixPath", "PurePath", "PurePosixPath")})
        out.update({(mod, n): pure(pathlib.PureWindowsPath) for n in ("WindowsPath", "PureWindowsPath")})
    return out

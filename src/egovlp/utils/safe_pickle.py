"""Restricted unpickling: rebuild tensors and arrays from untrusted files without ever running pickle code.

:func:`load_torch_checkpoint` reads a ``torch.save`` zip archive (``<archive>/data.pkl`` + raw storages
``<archive>/data/<key>``) such as an official EgoVLPv2 checkpoint, whose ``config`` is an object of a class from a
code base we do not have (so ``torch.load(weights_only=True)`` refuses it). :func:`load_pickle_restricted` reads a
plain pickle of numpy arrays and containers (the EK-100 relevancy matrix). Both run the pure-Python unpickler with
every opcode that calls or mutates an object (REDUCE, NEWOBJ, INST/OBJ, BUILD, SETITEM(S), APPEND(S)) checked.

Policy for the globals a pickle names:

1. **Allow-list** -> our own small re-implementations, never the function the pickle names: tensor / parameter
   rebuilds (``torch._utils._rebuild_tensor{,_v2,_v3}``, ``_rebuild_parameter{,_with_state}``,
   ``torch._tensor._rebuild_from_type_v2``), storage classes (markers inside persistent ids only), ``torch.Size``,
   ``torch.device``, dtypes, layouts, memory formats, ``OrderedDict``, ``set``/``frozenset``/``slice``/``complex``/
   ``bytearray``, ``_codecs.encode`` (protocol-2 bytes), ``pathlib`` paths (rebuilt as *pure* paths), ``copyreg``
   reconstructors (stub classes only), numpy array / scalar / dtype reconstruction (plain numeric and string dtypes;
   object and structured dtypes refused; dtype and array states checked before numpy sees them).
2. **Refused at once** (:class:`RefusedGlobalError` naming the global): modules that can run code or touch the
   system (``os``/``posix``, ``subprocess``, ``sys``, ``builtins`` such as ``eval``/``exec``/``getattr``,
   ``importlib``, ``pickle``, ``operator``, ``functools``, ...) and every non-allow-listed ``torch``/``numpy`` name.
3. **Anything else** (``parse_config.ConfigParser``, ``argparse.Namespace``, ...) -> a stub class, a subclass of
   :class:`OpaqueObject` recording module and name. Building an instance the way pickle builds plain objects
   (NEWOBJ + BUILD, ``copyreg._reconstructor``, argument-less INST/OBJ) gives an inert record of arguments and state.
   *Calling* a stub (REDUCE, INST/OBJ with arguments) raises :class:`RefusedGlobalError` naming the global, or with
   ``allow_opaque_calls=True`` gives an inert record. The named callable is never imported nor called.

:func:`load_pickle_restricted` has no stubs: anything outside the numpy / plain-container allow-list is refused.
"""

from __future__ import annotations

import _compat_pickle
import io
import logging
import math
import pathlib
import pickle
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from egovlp.errors import CheckpointError, DataError

__all__ = ["OpaqueObject", "RefusedGlobalError", "load_pickle_restricted", "load_torch_checkpoint"]

logger = logging.getLogger(__name__)

# Legacy (pre-1.6, non-zip) torch files start with a protocol-2 pickle of this magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# Top-level modules refused outright (they run code, spawn processes, touch files or are not data types).
_DENY_MODULE_NAMES = (
    "os posix nt subprocess sys shutil importlib runpy pickle _pickle marshal ctypes code codeop pty socket webbrowser "
    "operator _operator functools types builtins __builtin__ io _io tempfile multiprocessing threading _thread "
    "asyncio signal platform pdb timeit inspect gc cffi torch numpy pydoc shelve dill cloudpickle joblib yaml urllib "
    "http requests glob zipimport pkgutil site distutils setuptools pip ensurepip venv bdb trace cProfile profile "
    "commands popen2 nturl2path _posixsubprocess select selectors mmap resource copyreg _codecs codecs"
)
_DENY_MODULES = frozenset(_DENY_MODULE_NAMES.split())

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}  # fmt: skip


class RefusedGlobalError(CheckpointError, DataError):
    """A pickle named a global that restricted unpickling refuses (it could run code). Names the global and file."""


class OpaqueObject:
    """Inert stand-in for an object of a class we refuse to import. Records what the pickle gave it; runs nothing.

    Class attributes ``module`` and ``name`` give the global the pickle named. Instance attributes: ``args``
    (arguments pickle passed to ``__new__`` or to the refused call), ``kwargs``, ``state`` (what BUILD passed, usually
    the original ``__dict__``; ``None`` if none), ``items`` / ``list_items`` (SETITEMS / APPENDS of dict and list
    subclasses) and ``called`` (``True`` when the record stands for a call, see ``allow_opaque_calls``).
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = tuple(args), dict(kwargs), None
        obj.items, obj.list_items, obj.called = {}, [], False
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"OpaqueObject[{self.module}.{self.name}](args={self.args!r}, state={self.state!r})"


@dataclass(frozen=True)
class _Token:
    """A global that is only meaningful as an argument (a storage class, ``torch.Tensor``, ``numpy.ndarray``)."""

    qualname: str
    dtype: torch.dtype | None = None


_TENSOR, _PARAMETER, _NDARRAY, _OBJECT = (
    _Token("torch.Tensor"), _Token("torch.nn.Parameter"), _Token("numpy.ndarray"), _Token("builtins.object"),
)  # fmt: skip


def _bad(what: str) -> CheckpointError:
    return CheckpointError(f"malformed pickle data: {what}")


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or not all(type(v) is int and v >= 0 for v in value):
        raise _bad(f"{what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


# ---------------------------------------------------------------- torch tensors: our own rebuild functions
def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor viewing ``storage`` (TypedStorage from persistent_load) with bounds checked against the storage."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _bad(f"tensor storage must come from the archive, got {type(storage).__name__}")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or type(offset) is not int or offset < 0:
        raise _bad(f"tensor dtype/offset {dtype!r}/{offset!r}")
    size, stride = _ints(size, "tensor size"), _ints(stride, "tensor stride")
    if len(size) != len(stride):
        raise _bad(f"size {size} and stride {stride} differ in length")
    available = storage._untyped_storage.nbytes() // dtype.itemsize
    end = offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if end > available:
        raise _bad(f"tensor view (offset {offset}, size {size}, stride {stride}) exceeds its storage of {available}")
    return torch.empty((0,), dtype=dtype).set_(storage._untyped_storage, offset, size, stride)


def _finish(t: torch.Tensor, requires_grad: Any, hooks: Any, metadata: Any = None) -> torch.Tensor:
    if type(requires_grad) is not bool:
        raise _bad(f"requires_grad must be a bool, got {requires_grad!r}")
    if requires_grad and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    if metadata:
        if not (isinstance(metadata, dict) and all(type(k) is str and type(v) is bool for k, v in metadata.items())):
            raise _bad(f"tensor metadata {metadata!r}")
        torch._utils.set_tensor_metadata(t, metadata)
    if hooks:
        logger.warning("ignoring %d saved backward hook(s) on a tensor", len(hooks))
    return t


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _make_tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None) -> torch.Tensor:
    return _finish(_make_tensor(storage, offset, size, stride), requires_grad, hooks, metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None) -> torch.Tensor:
    return _finish(_make_tensor(storage, offset, size, stride, dtype), requires_grad, hooks, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise _bad(f"parameter from {type(data).__name__} / {requires_grad!r}")
    if state:
        logger.debug("ignoring saved Python attributes of a parameter: %s", sorted(map(str, state)))
    return torch.nn.Parameter(data, requires_grad=requires_grad)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if func not in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3) or not isinstance(args, tuple):
        raise _bad(f"_rebuild_from_type_v2 with {func!r}")
    t = func(*args)
    if new_type is _PARAMETER:
        return torch.nn.Parameter(t, requires_grad=t.requires_grad)
    if new_type is not _TENSOR:
        logger.warning("tensor subclass %r loaded as a plain tensor", new_type)
    return t


def _torch_size(dims: Any) -> torch.Size:
    return torch.Size(_ints(dims, "torch.Size"))


def _torch_device(*args: Any) -> torch.device:
    if not (1 <= len(args) <= 2 and all(type(a) in (str, int) for a in args)):
        raise _bad(f"torch.device{args!r}")
    return torch.device(*args)


@lru_cache(maxsize=1)
def _torch_globals() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for mod in ("torch._utils",):
        out.update({(mod, f.__name__): f for f in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3)})
        out[(mod, "_rebuild_parameter")] = out[(mod, "_rebuild_parameter_with_state")] = _rebuild_parameter
    for mod in ("torch._tensor", "torch.tensor"):
        out[(mod, "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    out.update({("torch", "Tensor"): _TENSOR, ("torch._tensor", "Tensor"): _TENSOR})
    out.update({("torch.nn.parameter", "Parameter"): _PARAMETER, ("torch", "Size"): _torch_size})
    out[("torch", "device")] = _torch_device
    for name in dir(torch):  # dtypes, layouts and memory formats are inert singletons
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            out[("torch", name)] = value
    for mod in ("torch", "torch.storage", "torch.cuda"):
        out.update({(mod, name): _Token(f"torch.{name}", dtype) for name, dtype in _STORAGE_DTYPES.items()})
    return out


def _record(zf: zipfile.ZipFile, name: str, archive_size: int) -> zipfile.ZipInfo:
    """A zip member that torch could have written: uncompressed, and no larger than the archive (no zip bombs)."""
    try:
        info = zf.getinfo(name)
    except KeyError as exc:
        raise _bad(f"record {name!r} is missing from the archive") from exc
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > archive_size:
        raise _bad(f"record {name!r} is compressed or larger than the archive (torch.save stores records as is)")
    return info


def _load_storage(
    zf: zipfile.ZipFile, prefix: str, token: _Token, key: str, numel: int, byteorder: str, archive_size: int
) -> Any:
    """Read ``<prefix>data/<key>`` into a CPU TypedStorage of ``token.dtype``, byte-swapped to the native order."""
    dtype = token.dtype
    assert dtype is not None
    nbytes = numel * (1 if token.qualname.endswith("UntypedStorage") else dtype.itemsize)
    info = _record(zf, f"{prefix}data/{key}", archive_size)
    if info.file_size != nbytes:
        raise _bad(f"storage 'data/{key}' holds {info.file_size} bytes, its tensor needs {nbytes}")
    buf = torch.empty(nbytes, dtype=torch.uint8)
    view = memoryview(buf.numpy())
    with zf.open(info) as fh:
        done = 0
        while done < nbytes:
            n = fh.readinto(view[done:])
            if not n:
                raise _bad(f"storage 'data/{key}' is truncated")
            done += n
    swap = dtype.itemsize // (2 if dtype.is_complex else 1)
    if byteorder != sys.byteorder and swap > 1 and not token.qualname.endswith("UntypedStorage"):
        buf.numpy().view(f"u{swap}").byteswap(inplace=True)
    return torch.storage.TypedStorage(wrap_storage=buf.untyped_storage(), dtype=dtype, _internal=True)


# ---------------------------------------------------------------- numpy and plain Python data
def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 16:
        raise _bad(f"numpy dtype spec {spec!r}")
    dt = np.dtype(spec, align=bool(align), copy=True)  # always a fresh object: BUILD must not touch numpy's singletons
    if dt.kind not in "biufcSU" or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise _bad(f"numpy dtype {spec!r} (only plain numeric and string dtypes are allowed)")
    return dt


def _check_dtype_state(dt: np.dtype, state: Any) -> None:
    """Accept only the state numpy itself writes for a plain dtype (byte order may differ)."""
    own = dt.__reduce__()[2]
    ok = isinstance(state, tuple) and len(state) == len(own) == 8 and state[1] in ("<", ">", "|", "=")
    if not (ok and state[0] == own[0] and state[2:] == own[2:]):
        raise _bad(f"numpy dtype state {state!r}")


def _check_array_state(state: Any) -> None:
    body = state[1:] if isinstance(state, tuple) and len(state) == 5 else state
    if not (isinstance(body, tuple) and len(body) == 4):
        raise _bad("numpy array state")
    shape, dt, fortran, raw = body
    shape = _ints(shape, "numpy array shape")
    if not isinstance(dt, np.dtype) or dt.hasobject or type(fortran) is not bool:
        raise _bad(f"numpy array dtype {dt!r}")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * dt.itemsize:
        raise _bad(f"numpy array data for shape {shape} and dtype {dt}")


def _np_reconstruct(subtype: Any, shape: Any, code: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise _bad(f"numpy array of subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)  # filled by BUILD once its state is checked


def _np_scalar(dt: Any, data: Any = None) -> np.generic:
    if not isinstance(dt, np.dtype) or dt.hasobject or not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _bad(f"numpy scalar of dtype {dt!r}")
    return np.frombuffer(data, dtype=dt)[0]


def _np_frombuffer(buf: Any, dt: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    shape = _ints(shape, "numpy array shape")
    if not isinstance(dt, np.dtype) or dt.hasobject or order not in ("C", "F"):
        raise _bad(f"numpy buffer array of dtype {dt!r}")
    _check_type(buf, (bytes, bytearray))
    if len(buf) != math.prod(shape) * dt.itemsize:
        raise _bad(f"numpy buffer of {len(buf)} bytes for shape {shape} and dtype {dt}")
    return np.frombuffer(bytearray(buf), dtype=dt).reshape(shape, order=order)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _np_dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = _np_reconstruct
        out[(f"{core}.multiarray", "scalar")] = _np_scalar
        out[(f"{core}.numeric", "_frombuffer")] = _np_frombuffer
    return out


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _bad(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    return bytearray(_codecs_encode(data, encoding) if isinstance(data, str) else _check_type(data, bytes))


def _check_type(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind):
        raise _bad(f"unexpected {type(value).__name__}")
    return value


def _plain_globals() -> dict[tuple[str, str], Any]:
    def collection(kind: type) -> Callable[..., Any]:
        return lambda items=(): kind(_check_type(items, (list, tuple, set, frozenset)))

    return {
        ("collections", "OrderedDict"): lambda items=(): OrderedDict(_check_type(items, (list, tuple, dict))),
        ("builtins", "set"): collection(set),
        ("builtins", "frozenset"): collection(frozenset),
        ("builtins", "slice"): lambda *a: slice(*(_check_type(v, (int, type(None))) for v in a)),
        ("builtins", "complex"): lambda *a: complex(*(_check_type(v, (int, float)) for v in a)),
        ("builtins", "bytearray"): _bytearray,
        ("_codecs", "encode"): _codecs_encode,
    }


def _object_globals() -> dict[tuple[str, str], Any]:
    """copyreg helpers (protocols 0/1, stub classes only) and pathlib classes rebuilt as inert pure paths."""

    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)) or base is not _OBJECT:
            raise _bad(f"copyreg._reconstructor({cls!r}, {base!r}) (only stub classes on object)")
        return cls.__new__(cls, *(() if state is None else (state,)))

    def newobj(cls: Any, *args: Any) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)):
            raise _bad(f"copyreg.__newobj__ of {cls!r} (only stub classes)")
        return cls.__new__(cls, *args)

    def pure(kind: type) -> Callable[..., Any]:
        return lambda *parts: kind(*(_check_type(p, str) for p in parts))

    out: dict[tuple[str, str], Any] = {("builtins", "object"): _OBJECT}
    out.update({("copyreg", "_reconstructor"): reconstructor, ("copyreg", "__newobj__"): newobj})
    for mod in ("pathlib", "pathlib._local"):
        out.update({(mod, n): pure(pathlib.PurePosixPath) for n in ("Path", "PosixPath", "PurePath", "PurePosixPath")})
        out.update({(mod, n): pure(pathlib.PureWindowsPath) for n in ("WindowsPath", "PureWindowsPath")})
    return out


# ---------------------------------------------------------------- the unpickler
class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every opcode below is ours to check
    """Unpickler whose ``find_class`` hands out allow-listed re-implementations or inert stubs, and whose
    REDUCE / NEWOBJ / INST / BUILD / SETITEMS / APPENDS only act on what those can produce."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        data: bytes,
        *,
        source: str,
        allowed: dict[tuple[str, str], Any],
        stub_unknown: bool,
        allow_opaque_calls: bool = False,
        load_storage: Callable[[_Token, str, int], Any] | None = None,
    ) -> None:
        super().__init__(io.BytesIO(data))
        self._source, self._allowed, self._stub_unknown = source, allowed, stub_unknown
        self._allow_opaque_calls, self._load_storage = allow_opaque_calls, load_storage
        self._callables = {id(v) for v in allowed.values() if callable(v) and not isinstance(v, _Token)}
        self._stubs: dict[tuple[str, str], type[OpaqueObject]] = {}

    def _refuse(self, qualname: str, reason: str) -> RefusedGlobalError:
        return RefusedGlobalError(f"{self._source}: refused pickle global '{qualname}': {reason}")

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # protocol 0-2 pickles name Python 2 modules (``__builtin__``, ``copy_reg``)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if not self._stub_unknown:
            raise self._refuse(f"{module}.{name}", "only numpy arrays and plain Python containers are allowed")
        if module.split(".", 1)[0] in _DENY_MODULES:
            raise self._refuse(f"{module}.{name}", "it can run code, or is not on the allow-list of its module")
        if (module, name) not in self._stubs:
            stub = type(f"OpaqueObject[{module}.{name}]", (OpaqueObject,), {"module": module, "name": name})
            self._stubs[(module, name)] = stub
            logger.debug("%s: unknown pickle global %s.%s becomes an inert stub", self._source, module, name)
        return self._stubs[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise _bad(f"unexpected persistent id {pid!r} in a plain pickle")
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise _bad(f"persistent id {pid!r}")
        typename, token, key, _location, numel = pid
        typename = typename.decode("ascii") if isinstance(typename, bytes) else typename
        if typename != "storage" or not isinstance(token, _Token) or token.dtype is None:
            raise _bad(f"persistent id {pid!r} (expected a tensor storage)")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise _bad(f"storage record {pid!r}")
        return self._load_storage(token, key, numel)

    def _call(self, func: Any, args: Any) -> Any:
        """REDUCE, and INST/OBJ with arguments: only allow-listed callables run; stubs are refused or recorded."""
        if isinstance(func, type) and issubclass(func, OpaqueObject):
            if not self._allow_opaque_calls:
                raise self._refuse(
                    f"{func.module}.{func.name}",
                    "the pickle calls it, and unknown callables are never called "
                    "(allow_opaque_calls=True records such calls as inert OpaqueObject instead)",
                )
            obj = func.__new__(func, *args)
            obj.called = True
            return obj
        if id(func) not in self._callables or not isinstance(args, tuple):
            raise _bad(f"call of {func!r} (not an allow-listed callable)")
        return func(*args)

    def _new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)) or not isinstance(args, tuple):
            raise _bad(f"NEWOBJ of {cls!r} (only unknown classes become inert stubs)")
        return cls.__new__(cls, *args, **(kwargs or {}))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, _check_type(kwargs, dict))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        if not args and isinstance(klass, type) and issubclass(klass, OpaqueObject):
            self.append(klass.__new__(klass))
        else:
            self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, OpaqueObject):
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
            inst.__setstate__(state)
        elif type(inst) is np.ndarray:
            _check_array_state(state)
            inst.__setstate__(state)
        elif type(inst) is OrderedDict and isinstance(state, dict) and all(type(k) is str for k in state):
            inst.__dict__.update(state)  # e.g. the ``_metadata`` attribute of a module state dict
        else:
            raise _bad(f"BUILD on {type(inst).__name__}")

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = _check_type(self.stack[-1], (dict, OpaqueObject))
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        _check_type(self.stack[-1], (dict, OpaqueObject))[key] = value

    def load_appends(self) -> None:
        items = self.pop_mark()
        _check_type(self.stack[-1], (list, OpaqueObject)).extend(items)

    def load_append(self) -> None:
        value = self.stack.pop()
        _check_type(self.stack[-1], (list, OpaqueObject)).append(value)

    def load_additems(self) -> None:
        items = self.pop_mark()
        _check_type(self.stack[-1], set).update(items)

    for _op, _fn in (
        (pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex),
        (pickle.BUILD, load_build), (pickle.SETITEMS, load_setitems), (pickle.SETITEM, load_setitem),
        (pickle.APPENDS, load_appends), (pickle.APPEND, load_append), (pickle.ADDITEMS, load_additems),
    ):  # fmt: skip
        dispatch[_op[0]] = _fn
    del _op, _fn


def _run(unpickler: _RestrictedUnpickler, source: str, error: type[Exception]) -> Any:
    """``unpickler.load()`` with every failure turned into ``error`` (or RefusedGlobalError) naming the file."""
    try:
        return unpickler.load()
    except RefusedGlobalError:
        raise
    except CheckpointError as exc:
        raise error(f"{source}: {exc}") from exc
    except Exception as exc:  # anything else also means malformed or hostile pickle data
        raise error(f"{source}: malformed pickle data: {type(exc).__name__}: {exc}") from exc


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


def load_torch_checkpoint(path: str | Path, *, allow_opaque_calls: bool = False) -> dict[str, Any]:
    """Load a ``torch.save`` zip checkpoint onto the CPU without executing any pickle code.

    Args:
        path: a file written by ``torch.save`` (zip format, torch >= 1.6).
        allow_opaque_calls: record calls of unknown globals as inert :class:`OpaqueObject` instead of raising.

    Returns:
        The saved top-level dict, e.g. ``{'arch', 'epoch', 'state_dict', 'optimizer', 'scheduler', 'monitor_best',
        'config'}``. Tensors are real CPU tensors (dtype, views, strides and shared storages as saved); objects of
        unknown classes (the official ``config``) are :class:`OpaqueObject` records.

    Raises:
        RefusedGlobalError: the pickle names a refused global, or calls an unknown one (message names it).
        CheckpointError: a legacy (non-zip) torch file, a TorchScript archive, or malformed records.
    """
    path = Path(path)
    source = str(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            legacy = fh.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC
        if legacy:
            raise CheckpointError(
                f"{source}: legacy (pre-1.6, non-zip) torch serialization format, not supported by the restricted "
                "loader; re-save it with torch.save (torch >= 1.6) in a trusted environment first"
            )
        raise CheckpointError(f"{source}: not a torch.save zip archive")
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        prefix = _archive_prefix(zf, source)
        byteorder = _byteorder(zf, prefix, source)
        storages: dict[str, Any] = {}

        def load_storage(token: _Token, key: str, numel: int) -> Any:
            if key not in storages:  # tensors sharing a storage share it again, as torch.load does
                storages[key] = _load_storage(zf, prefix, token, key, numel, byteorder, size)
            return storages[key]

        try:
            data = zf.read(_record(zf, prefix + "data.pkl", size))
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        allowed = {**_torch_globals(), **_numpy_globals(), **_plain_globals(), **_object_globals()}
        unpickler = _RestrictedUnpickler(
            data,
            source=source,
            allowed=allowed,
            stub_unknown=True,
            allow_opaque_calls=allow_opaque_calls,
            load_storage=load_storage,
        )
        obj = _run(unpickler, source, CheckpointError)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict at the top level of the checkpoint, got {type(obj).__name__}")
    logger.debug("%s: loaded %d storages", source, len(storages))
    return obj


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
    allowed = {**_plain_globals(), **(_numpy_globals() if allow_numpy else {})}
    unpickler = _RestrictedUnpickler(path.read_bytes(), source=str(path), allowed=allowed, stub_unknown=False)
    return _run(unpickler, str(path), DataError)

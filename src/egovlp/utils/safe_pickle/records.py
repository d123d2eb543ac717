"""What restricted unpickling hands back for what it will not import: inert records, tokens and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from egovlp.errors import CheckpointError, DataError


class RefusedGlobalError(CheckpointError, DataError):
    """A pickle named a global that restricted unpickling refuses (it could run code). Names the global and file."""


class OpaqueObject:
    """Inert stand-in for an object of a class we refuse to import. Records what the pickle gave it; runs nothing.

    Class attributes ``module`` and ``name`` give the global the pickle named. Instance attributes: ``args``
    (arguments pickle passed to ``__new__`` or to the refused call), ``kwargs``, ``state`` (what BUILD passed, usually
    the original ``__dict__``; ``None`` if none), ``items`` / ``list_items`` (SETITEMS / APPENDS of dict and list
    subclasses) and ``called`` (``True`` when the record stands for a call, see ``allow_opaque_calls``).
    """

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]
    called: bool

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


class InertDict(dict[Any, Any]):
    """A plain ``dict`` rebuilt from a dict subclass known to hold only data, e.g. PyTorch-Lightning's
    ``AttributeDict`` (``hyper_parameters``) or sacred's ``ReadOnlyDict``. ``module`` / ``name`` give the class the
    pickle named (never imported); ``state`` is what BUILD passed (``None`` if nothing)."""

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""
    state: Any = None


class InertList(list[Any]):
    """A plain ``list`` rebuilt from a list subclass known to hold only data (sacred's ``ReadOnlyList``)."""

    module: ClassVar[str] = ""
    name: ClassVar[str] = ""
    state: Any = None


INERT_CONTAINERS = (InertDict, InertList)


@dataclass(frozen=True)
class Token:
    """A global that is only meaningful as an argument (a storage class, ``torch.Tensor``, ``numpy.ndarray``)."""

    qualname: str
    dtype: torch.dtype | None = None


TENSOR, PARAMETER, NDARRAY, OBJECT = (
    Token("torch.Tensor"), Token("torch.nn.Parameter"), Token("numpy.ndarray"), Token("builtins.object"),
)  # fmt: skip


def bad(what: str) -> CheckpointError:
    """The error for pickle data that no honest writer produces; the loader adds the file name."""
    return CheckpointError(f"malformed pickle data: {what}")


def check_type(value: Any, kind: type | tuple[type, ...]) -> Any:
    """``value`` if it is a ``kind``, else :func:`bad`."""
    if not isinstance(value, kind):
        raise bad(f"unexpected {type(value).__name__}")
    return value


def ints(value: Any, what: str) -> tuple[int, ...]:
    """``value`` as a tuple of non-negative ints (a shape or strides), else :func:`bad`."""
    if not isinstance(value, (tuple, list, torch.Size)) or not all(type(v) is int and v >= 0 for v in value):
        raise bad(f"{what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)

"""How restricted unpickling runs: the pure-Python unpickler with every opcode that calls or mutates an object
routed through a :class:`~.policy.Policy`, protocol-0..2 name mapping, persistent ids (tensor storages) and the
turning of every failure into one error naming the file."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

from egovlp.errors import CheckpointError
from egovlp.utils.safe_pickle.policy import Policy
from egovlp.utils.safe_pickle.records import RefusedGlobalError, Token, bad, check_type

# Reads ``<archive>/data/<key>`` for a persistent id ("storage", token, key, location, numel) of a torch archive.
LoadStorage = Callable[[Token, str, int], Any]


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every opcode below is ours to check
    """Unpickler whose ``find_class`` and object-building opcodes ask ``policy`` instead of acting themselves."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)
    # Attributes of the pure-Python unpickler that typeshed does not declare.
    proto: int
    stack: list[Any]
    append: Callable[[Any], None]
    pop_mark: Callable[[], list[Any]]

    def __init__(self, data: bytes, policy: Policy, load_storage: LoadStorage | None = None) -> None:
        super().__init__(io.BytesIO(data))
        self._policy, self._load_storage = policy, load_storage

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # protocol 0-2 pickles name Python 2 modules (``__builtin__``, ``copy_reg``)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return self._policy.find(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise bad(f"unexpected persistent id {pid!r} in a plain pickle")
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise bad(f"persistent id {pid!r}")
        typename, token, key, _location, numel = pid
        typename = typename.decode("ascii") if isinstance(typename, bytes) else typename
        if typename != "storage" or not isinstance(token, Token) or token.dtype is None:
            raise bad(f"persistent id {pid!r} (expected a tensor storage)")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise bad(f"storage record {pid!r}")
        return self._load_storage(token, key, numel)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._policy.call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._policy.new(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.stack[-1] = self._policy.new(self.stack[-1], args, check_type(kwargs, dict))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ
        self.append(self._policy.instantiate(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        self._policy.build(self.stack[-1], state)

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._policy.mapping(self.stack[-1])
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._policy.mapping(self.stack[-1])[key] = value

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._policy.sequence(self.stack[-1]).extend(items)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._policy.sequence(self.stack[-1]).append(value)

    def load_additems(self) -> None:
        items = self.pop_mark()
        check_type(self.stack[-1], set).update(items)

    for _op, _fn in (
        (pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex),
        (pickle.BUILD, load_build), (pickle.SETITEMS, load_setitems), (pickle.SETITEM, load_setitem),
        (pickle.APPENDS, load_appends), (pickle.APPEND, load_append), (pickle.ADDITEMS, load_additems),
    ):  # fmt: skip
        dispatch[_op[0]] = _fn
    del _op, _fn


def unpickle(
    data: bytes, policy: Policy, *, source: str, error: type[Exception], load_storage: LoadStorage | None = None
) -> Any:
    """Unpickle ``data`` under ``policy``; every failure becomes ``error`` (or :class:`RefusedGlobalError`) whose
    message starts with ``source`` (the file, or ``file:member``)."""
    try:
        return _RestrictedUnpickler(data, policy, load_storage).load()
    except RefusedGlobalError as exc:
        raise RefusedGlobalError(f"{source}: {exc}") from exc
    except CheckpointError as exc:
        raise error(f"{source}: {exc}") from exc
    except Exception as exc:  # anything else also means malformed or hostile pickle data
        raise error(f"{source}: malformed pickle data: {type(exc).__name__}: {exc}") from exc

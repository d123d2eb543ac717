"""What restricted unpickling may rebuild: the decisions, apart from the opcode mechanics of :mod:`.engine`.

A :class:`Policy` answers, for one load, every question the unpickler asks:

- **find** a global ``module.name``: an allow-listed re-implementation (:mod:`.rebuild`), an inert container class
  for a dict / list subclass known to hold only data (Lightning's ``AttributeDict``, sacred's ``ReadOnlyDict`` /
  ``ReadOnlyList``), a refusal (modules that can run code or touch the system, every non-allow-listed ``torch`` /
  ``numpy`` name) or, where the loader asks for stubs, an :class:`OpaqueObject` stub class recording the name;
- **call** (REDUCE, INST/OBJ with arguments): only allow-listed callables and inert containers run; a stub is
  refused naming the global, or recorded as an inert call with ``allow_opaque_calls``;
- **new** (NEWOBJ, argument-less INST/OBJ): only stubs and inert containers;
- **build** (BUILD): only records, dtypes and arrays whose state numpy itself would write, and the string
  attributes of an ``OrderedDict`` (a state dict's ``_metadata``);
- **fill** (SETITEM(S), APPEND(S), ADDITEMS): only dicts, lists, sets and the records and containers above.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egovlp.utils.safe_pickle import rebuild
from egovlp.utils.safe_pickle.records import (
    INERT_CONTAINERS,
    InertDict,
    InertList,
    OpaqueObject,
    RefusedGlobalError,
    Token,
    bad,
    check_type,
)

logger = logging.getLogger(__name__)

# Top-level modules refused outright (they run code, spawn processes, touch files or are not data types).
_DENY_MODULE_NAMES = (
    "os posix nt subprocess sys shutil importlib runpy pickle _pickle marshal ctypes code codeop pty socket webbrowser "
    "operator _operator functools types builtins __builtin__ io _io tempfile multiprocessing threading _thread "
    "asyncio signal platform pdb timeit inspect gc cffi torch numpy pydoc shelve dill cloudpickle joblib yaml urllib "
    "http requests glob zipimport pkgutil site distutils setuptools pip ensurepip venv bdb trace cProfile profile "
    "commands popen2 nturl2path _posixsubprocess select selectors mmap resource copyreg _codecs codecs"
)
DENY_MODULES = frozenset(_DENY_MODULE_NAMES.split())

# Dict / list subclasses of other code bases whose pickled form is plain data (their methods never matter to us).
INERT_CONTAINER_CLASSES: dict[tuple[str, str], type[InertDict] | type[InertList]] = {
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): InertDict,  # Lightning <= 1.x ``hyper_parameters``
    ("lightning.pytorch.utilities.parsing", "AttributeDict"): InertDict,
    ("lightning_fabric.utilities.data", "AttributeDict"): InertDict,  # Lightning 2.x
    ("lightning.fabric.utilities.data", "AttributeDict"): InertDict,
    ("sacred.config.custom_containers", "ReadOnlyDict"): InertDict,  # a sacred config inside the hyper-parameters
    ("sacred.config.custom_containers", "ReadOnlyList"): InertList,
}


@dataclass
class Policy:
    """The globals and object operations one load may use (see the module docstring).

    Attributes:
        allowed: ``(module, name)`` -> our re-implementation, a :class:`Token` or an inert singleton (a dtype).
        stub_unknown: give globals outside ``allowed`` and outside :data:`DENY_MODULES` an :class:`OpaqueObject`
            stub class instead of refusing them.
        allow_opaque_calls: record calls of stubs as inert records instead of refusing them.
        allow_object_arrays: numpy arrays of dtype ``object`` may be built (their elements pass this same policy).
    """

    allowed: Mapping[tuple[str, str], Any]
    stub_unknown: bool
    allow_opaque_calls: bool = False
    allow_object_arrays: bool = False
    _stubs: dict[tuple[str, str], type] = field(default_factory=dict, repr=False)
    _callables: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._callables = {id(v) for v in self.allowed.values() if callable(v) and not isinstance(v, Token)}

    @staticmethod
    def refusal(qualname: str, reason: str) -> RefusedGlobalError:
        return RefusedGlobalError(f"refused pickle global '{qualname}': {reason}")

    def find(self, module: str, name: str) -> Any:
        """What the global ``module.name`` stands for in this load (never the named object itself)."""
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if not self.stub_unknown:
            raise self.refusal(f"{module}.{name}", "only numpy arrays and plain Python containers are allowed")
        if (module, name) in INERT_CONTAINER_CLASSES:
            return self._stub(module, name, INERT_CONTAINER_CLASSES[(module, name)], "an inert container")
        if module.split(".", 1)[0] in DENY_MODULES:
            raise self.refusal(f"{module}.{name}", "it can run code, or is not on the allow-list of its module")
        return self._stub(module, name, OpaqueObject, "an inert stub")

    def _stub(self, module: str, name: str, base: type, what: str) -> type:
        if (module, name) not in self._stubs:
            attrs = {"module": module, "name": name, "__module__": __name__}
            self._stubs[(module, name)] = type(f"{base.__name__}[{module}.{name}]", (base,), attrs)
            logger.debug("pickle global %s.%s becomes %s", module, name, what)
        return self._stubs[(module, name)]

    def call(self, func: Any, args: Any) -> Any:
        """REDUCE, and INST/OBJ with arguments: only allow-listed callables run; stubs are refused or recorded."""
        if isinstance(func, type) and issubclass(func, OpaqueObject):
            if not self.allow_opaque_calls:
                raise self.refusal(
                    f"{func.module}.{func.name}",
                    "the pickle calls it, and unknown callables are never called "
                    "(allow_opaque_calls=True records such calls as inert OpaqueObject instead)",
                )
            obj = rebuild.new_record(func, args)
            obj.called = True
            return obj
        if isinstance(func, type) and issubclass(func, INERT_CONTAINERS):
            return rebuild.new_record(func, args)  # e.g. sacred's ``ReadOnlyDict.__reduce__``: (cls, (dict(self),))
        if id(func) not in self._callables or not isinstance(args, tuple):
            raise bad(f"call of {func!r} (not an allow-listed callable)")
        return func(*args)

    def new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        """NEWOBJ / NEWOBJ_EX / argument-less INST and OBJ: ``cls.__new__`` of a stub or inert container only."""
        return rebuild.new_record(cls, args, kwargs)

    def instantiate(self, klass: Any, args: tuple[Any, ...]) -> Any:
        """INST / OBJ: ``__new__`` of a stub or container without arguments, else a :meth:`call`."""
        if not args and isinstance(klass, type) and issubclass(klass, (OpaqueObject, *INERT_CONTAINERS)):
            return self.new(klass, ())
        return self.call(klass, args)

    def build(self, inst: Any, state: Any) -> None:
        """BUILD: set ``state`` on ``inst`` where this policy rebuilt ``inst`` and the state is what numpy or
        ``Module.state_dict`` write; records and containers keep the state as given."""
        if isinstance(inst, (OpaqueObject, *INERT_CONTAINERS)):
            inst.state = state
        elif isinstance(inst, np.dtype):
            rebuild.check_dtype_state(inst, state)
            inst.__setstate__(state)  # type: ignore[attr-defined]
        elif type(inst) is np.ndarray:
            rebuild.check_array_state(state, self.allow_object_arrays)
            inst.__setstate__(state)
        elif type(inst) is OrderedDict and isinstance(state, dict) and all(type(k) is str for k in state):
            inst.__dict__.update(state)  # e.g. the ``_metadata`` attribute of a module state dict
        else:
            raise bad(f"BUILD on {type(inst).__name__}")

    @staticmethod
    def mapping(target: Any) -> Any:
        """The target of SETITEM(S): a dict (inert containers included) or a record."""
        return check_type(target, (dict, OpaqueObject))

    @staticmethod
    def sequence(target: Any) -> Any:
        """The target of APPEND(S): a list (inert containers included) or a record."""
        return check_type(target, (list, OpaqueObject))


def checkpoint_policy(allow_opaque_calls: bool = False) -> Policy:
    """A ``torch.save`` checkpoint: tensors, numpy, plain data, pure paths, stubs for other code bases' classes."""
    allowed = {**rebuild.torch_globals(), **rebuild.numpy_globals(), **rebuild.plain_globals()}
    allowed.update(rebuild.object_globals())
    return Policy(allowed, stub_unknown=True, allow_opaque_calls=allow_opaque_calls)


def plain_policy(allow_numpy: bool = True, allow_object_arrays: bool = False) -> Policy:
    """A plain pickle of numpy arrays / scalars and Python containers: no stubs, every other global refused."""
    allowed = {**rebuild.plain_globals(), **(rebuild.numpy_globals(allow_object_arrays) if allow_numpy else {})}
    return Policy(allowed, stub_unknown=False, allow_object_arrays=allow_object_arrays)

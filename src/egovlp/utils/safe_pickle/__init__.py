"""Restricted unpickling: rebuild tensors and arrays from untrusted files without ever running pickle code.

- :func:`load_torch_checkpoint` reads a ``torch.save`` zip archive such as an official EgoVLPv2 / EgoVLP /
  Frozen-in-Time checkpoint, whose ``config`` is an object of a class from a code base we do not have (so
  ``torch.load(weights_only=True)`` refuses it), or a PyTorch-Lightning ``.ckpt`` (All-in-one) whose
  ``hyper_parameters`` is a dict subclass.
- :func:`load_pickle_restricted` reads a plain pickle of numpy arrays and containers (the EK-100 relevancy matrix).
- :func:`load_npz_safely` reads an ``.npz`` whose object arrays (a pickled dict) go through the same restrictions.

The parts: what may be rebuilt (:mod:`.policy`: which globals map to what, and which objects BUILD / SETITEMS /
APPENDS may touch; :mod:`.rebuild`: our own checked re-implementations of the allow-listed globals;
:mod:`.records`: the inert records for everything else) apart from how (:mod:`.engine`: the pure-Python unpickler
whose object-building opcodes ask the policy; :mod:`.archive`: the torch zip format and its storages;
:mod:`.plain`: plain pickles and ``.npz`` members).

Policy for the globals a pickle names:

1. **Allow-list** -> our re-implementations, never the function the pickle names: tensor / parameter rebuilds,
   storage classes (markers inside persistent ids only), ``torch.Size``, ``torch.device``, dtypes, layouts, memory
   formats, ``OrderedDict``, ``set``/``frozenset``/``slice``/``complex``/``bytearray``, ``_codecs.encode``,
   ``pathlib`` paths (rebuilt as *pure* paths), ``copyreg`` reconstructors (stub classes only), numpy array / scalar /
   dtype reconstruction (plain numeric and string dtypes; object dtypes only inside ``.npz`` object arrays; dtype and
   array states checked before numpy sees them).
2. **Inert containers** (checkpoints): dict / list subclasses known to be plain data (Lightning's ``AttributeDict``,
   sacred's ``ReadOnlyDict`` / ``ReadOnlyList``) -> :class:`InertDict` / :class:`InertList`, a real dict / list.
3. **Refused at once** (:class:`RefusedGlobalError` naming the global): modules that can run code or touch the
   system (``os``/``posix``, ``subprocess``, ``sys``, ``builtins`` such as ``eval``/``exec``/``getattr``,
   ``importlib``, ``pickle``, ``operator``, ``functools``, ...) and every non-allow-listed ``torch``/``numpy`` name.
4. **Anything else** in a checkpoint (``parse_config.ConfigParser``, ``argparse.Namespace``, ...) -> a stub class, a
   subclass of :class:`OpaqueObject` recording module and name. Building an instance the way pickle builds plain
   objects (NEWOBJ + BUILD, ``copyreg._reconstructor``, argument-less INST/OBJ) gives an inert record of arguments
   and state. *Calling* a stub (REDUCE, INST/OBJ with arguments) raises :class:`RefusedGlobalError` naming the
   global, or with ``allow_opaque_calls=True`` gives an inert record. The named callable is never imported nor called.

Plain pickles and ``.npz`` object arrays have no stubs: anything outside the numpy / plain-container allow-list is
refused.
"""

from egovlp.utils.safe_pickle.archive import load_torch_checkpoint
from egovlp.utils.safe_pickle.plain import load_npz_safely, load_pickle_restricted
from egovlp.utils.safe_pickle.records import InertDict, InertList, OpaqueObject, RefusedGlobalError

__all__ = [
    "InertDict",
    "InertList",
    "OpaqueObject",
    "RefusedGlobalError",
    "load_npz_safely",
    "load_pickle_restricted",
    "load_torch_checkpoint",
]

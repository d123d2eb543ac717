"""The experiment configs shipped with egovlp, found by name wherever the package is installed.

A preset is a YAML file in this package, named ``group/name`` after its folder and file stem (``pretrain/egoclip``,
``eval/epic_mir``, ``finetune/charades``, ``extract/mq_video``). ``--config`` takes a preset name or a path:

- a path to an existing file always wins (``--config my_run.yaml``);
- ``group/name`` names a preset exactly; ``configs/group/name.yaml`` (the repository layout the docs once used)
  and ``group/name.yaml`` mean the same preset;
- a bare ``name`` is the preset of that name in the command's group (``egovlp finetune epic_mir --config epic_mir``
  is ``finetune/epic_mir``), or, with no group, the only preset of that name in any group.

The files are read with :mod:`importlib.resources`, so this works from a wheel as well as from a source checkout.
"""

from __future__ import annotations

import atexit
import difflib
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from egovlp.errors import ConfigError

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; importlib.abc keeps it for 3.10
    from importlib.abc import Traversable

SUFFIXES = (".yaml", ".yml")


def _root() -> Traversable:
    return resources.files(__name__)


def _preset_files() -> dict[str, Traversable]:
    """``{"group/name": file}`` of every shipped YAML, sorted by name."""
    found: dict[str, Traversable] = {}
    for group in _root().iterdir():
        if not group.is_dir() or group.name.startswith(("_", ".")):
            continue
        for item in group.iterdir():
            stem, dot, suffix = item.name.rpartition(".")
            if item.is_file() and dot and f".{suffix}" in SUFFIXES:
                found[f"{group.name}/{stem}"] = item
    return dict(sorted(found.items()))


def _description(text: str) -> str:
    """The first comment line of a YAML file, without its ``#``; a line that runs on into the next one (no final
    ``.``) is cut at its first ``: `` so that no description stops mid-sentence. Empty without an opening comment."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        first = stripped.lstrip("#").strip()
        return first if first.endswith(".") or ": " not in first else first.split(": ", 1)[0]
    return ""


def list_presets() -> dict[str, str]:
    """``{"group/name": one-line description}`` of every shipped preset (the description is the file's first
    comment line), sorted by name."""
    return {name: _description(item.read_text(encoding="utf-8")) for name, item in _preset_files().items()}


def preset_text(name: str, group: str | None = None) -> str:
    """The YAML text of the preset ``name`` (resolved as :func:`resolve_config` does, without the path case)."""
    return _preset_files()[_preset_name(name, group)].read_text(encoding="utf-8")


_extracted: Path | None = None


def _as_path(item: Traversable, name: str) -> Path:
    """A file system path of a shipped file (copied out once if the package is imported from a zip archive)."""
    global _extracted
    if isinstance(item, Path):
        return item
    if _extracted is None:
        _extracted = Path(tempfile.mkdtemp(prefix="egovlp-configs-"))
        atexit.register(shutil.rmtree, _extracted, True)
    out = _extracted / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
    return out


def _normalise(spec: str) -> str:
    name = spec.strip().replace("\\", "/")
    name = name.removeprefix("./").removeprefix("configs/")
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _preset_name(spec: str, group: str | None) -> str:
    """The ``group/name`` that ``spec`` names, or a :class:`ConfigError` that lists close preset names."""
    names = list(_preset_files())
    name = _normalise(spec)
    if name in names:
        return name
    if "/" not in name:
        if group is not None and f"{group}/{name}" in names:
            return f"{group}/{name}"
        same = [n for n in names if n.split("/", 1)[1] == name]
        if group is None and len(same) == 1:
            return same[0]
        if group is None and len(same) > 1:
            raise ConfigError(f"config preset '{spec}' is ambiguous: say which of {', '.join(same)}")
    raise ConfigError(_unknown_message(spec, name, group, names))


def _unknown_message(spec: str, name: str, group: str | None, names: list[str]) -> str:
    looks_like_file = spec.endswith(SUFFIXES) or spec.startswith((".", "/", "~"))
    what = f"config file {spec} not found and no preset of that name" if looks_like_file else f"unknown config '{spec}'"
    if group is not None and "/" not in name:
        what += f" (looked for preset {group}/{name})"
    bare = {n: n.split("/", 1)[1] for n in names}
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    close_bare = set(difflib.get_close_matches(name.rsplit("/", 1)[-1], sorted(set(bare.values())), n=4, cutoff=0.6))
    close = list(dict.fromkeys(close + [n for n in names if bare[n] in close_bare]))
    if group is not None:
        close.sort(key=lambda n: not n.startswith(f"{group}/"))
    if close:
        return f"{what}; close presets: {', '.join(close)} (`egovlp configs` lists them all)"
    if looks_like_file:
        return f"{what} (`egovlp configs` lists the presets)"
    pool = [n for n in names if group is None or n.startswith(f"{group}/")] or names
    return f"{what}; presets: {', '.join(pool)} (`egovlp configs` lists them all)"


def resolve_config(spec: str | Path, group: str | None = None) -> Path:
    """The YAML file ``spec`` names: an existing path, else a shipped preset (see the module docstring).

    ``group`` is the command's preset folder (``"pretrain"``, ``"eval"``, ``"finetune"``, ``"extract"``) that a bare
    name is looked up in. Raises :class:`~egovlp.errors.ConfigError` naming close presets when nothing matches.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    try:  # a folder of the same name (the demo/ that `make demo` writes) does not hide the preset
        name = _preset_name(str(spec), group)
    except ConfigError:
        if path.is_dir():
            raise ConfigError(f"config {spec} is a directory, not a YAML file") from None
        raise
    return _as_path(_preset_files()[name], name)

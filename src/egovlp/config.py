"""Typed configuration: frozen dataclasses are the schema, YAML files are instances.

A config is built in layers, each merged onto the previous one and validated against the schema:

1. the dataclass defaults,
2. a YAML file (``--config path.yaml``),
3. ``key.sub=value`` overrides from the command line.

Unknown keys and ill-typed values raise :class:`ConfigError`, which names the offending key, where it came from
(the YAML path or the command line) and the closest valid keys. Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from egovlp.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "at_least",
    "config_to_dict",
    "greater_than",
    "load_config",
    "merge_into",
    "one_of",
    "rule",
    "to_yaml",
    "validate_config",
]

RULE_KEY = "egovlp.rule"


# ------------------------------------------------------------------------------------------------ value rules
def rule(default: Any, description: str, check: Callable[[Any], bool]) -> Any:
    """A dataclass field with ``default`` whose value must satisfy ``check`` (``description`` says the rule).

    :func:`load_config` checks every rule of a config (nested dataclasses included) and reports a broken one in one
    line naming the full key, the rule and the value: ``data.batch_size must be >= 1, got 0``. Dataclasses may add
    rules between fields with a ``check_config(self) -> Iterator[tuple[str, str]]`` method yielding
    ``(field name, problem)``.
    """
    return dataclasses.field(default=default, metadata={RULE_KEY: (description, check)})


def at_least(minimum: float, default: Any) -> Any:
    """A numeric field that must be ``>= minimum``."""
    return rule(default, f"must be >= {minimum:g}", lambda v: v >= minimum)


def greater_than(minimum: float, default: Any) -> Any:
    """A numeric field that must be ``> minimum``."""
    return rule(default, f"must be > {minimum:g}", lambda v: v > minimum)


def one_of(choices: Sequence[Any], default: Any) -> Any:
    """A field whose value must be one of ``choices``."""
    allowed = tuple(choices)
    return rule(default, f"must be one of {', '.join(map(str, allowed))}", lambda v: v in allowed)


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Check the value rules of ``cfg`` and of every nested config dataclass; raise :class:`ConfigError` at the
    first broken one, naming its full key."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        spec = f.metadata.get(RULE_KEY)
        if spec is not None and not spec[1](value):
            raise ConfigError(f"config key '{prefix}{f.name}' {spec[0]}, got {value!r}")
        validate_config(value, f"{prefix}{f.name}.")
    check = getattr(cfg, "check_config", None)
    if check is not None:
        for key, problem in check():
            raise ConfigError(f"config key '{prefix}{key}' {problem}")


def _schema_keys(node: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a (nested) OmegaConf node."""
    keys = []
    if isinstance(node, DictConfig):
        for k in node:
            full = prefix + str(k)
            keys.append(full)
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                keys.extend(_schema_keys(child, full + "."))
    return keys


def _suggest(schema: DictConfig, full_key: str) -> str:
    parent, _, leaf = full_key.rpartition(".")
    keys = _schema_keys(schema)
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.5)
    close = [f"{parent}.{c}" if parent else c for c in close]
    if not close:  # maybe the key exists under another section
        close = [k for k in keys if k.rpartition(".")[2] == leaf][:3]
    if not close:
        close = difflib.get_close_matches(full_key, keys, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def merge_into(schema: DictConfig, layer: DictConfig | dict, source: str) -> DictConfig:
    """Merge ``layer`` onto ``schema``; errors name the key, the ``source`` and close matches."""
    try:
        return OmegaConf.merge(schema, layer)  # type: ignore[return-value]
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        raise ConfigError(f"unknown config key '{key}' (from {source}){_suggest(schema, key)}") from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise ConfigError(f"invalid value for config key '{e.full_key}' (from {source}): {msg}") from None


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override {item!r} is not of the form key.sub=value")
    # ``key=`` sets an empty string (OmegaConf would read it as null, which a string field refuses)
    items = [f"{item}''" if item.endswith("=") else item for item in overrides]
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse command-line overrides {list(overrides)}: {e}") from None


def _read_yaml(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        conf = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(conf, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return conf


def load_config(
    schema: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    prepare: Callable[[DictConfig, DictConfig], DictConfig] | None = None,
    yaml_text: tuple[str, str] | None = None,
) -> T:
    """Build a ``schema`` instance from its defaults, an optional YAML file and ``key=value`` overrides.

    ``yaml_text = (text, source)`` gives YAML held in memory (e.g. embedded in a weight file) instead of ``path``.
    ``prepare(user_layers, base)`` may replace the base schema node before merging, once the user's layers are
    known (used to start ``model`` from a named architecture in the registry).
    """
    base = OmegaConf.structured(schema)
    layers: list[tuple[DictConfig, str]] = []
    if path is not None:
        layers.append((_read_yaml(path), str(path)))
    if yaml_text is not None:
        conf = OmegaConf.create(yaml_text[0])
        if not isinstance(conf, DictConfig):
            raise ConfigError(f"config in {yaml_text[1]} must hold a mapping at the top level")
        layers.append((conf, yaml_text[1]))
    if overrides:
        layers.append((_parse_overrides(overrides), "the command line"))
    if prepare is not None:
        user = OmegaConf.merge(*[layer for layer, _ in layers]) if layers else OmegaConf.create({})
        assert isinstance(user, DictConfig)  # a merge of mappings is a mapping
        base = prepare(user, base)
    conf = base
    for layer, source in layers:
        conf = merge_into(conf, layer, source)
    try:
        cfg = OmegaConf.to_object(conf)
    except OmegaConfBaseException as e:
        raise ConfigError(f"incomplete config: {str(e).splitlines()[0]} (key '{e.full_key}')") from None
    validate_config(cfg)
    return cfg  # type: ignore[return-value]


def config_to_dict(cfg: Any) -> dict:
    """A plain ``dict`` of a config dataclass (nested), for saving and logging."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    raise TypeError(f"not a config: {type(cfg).__name__}")


def to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass; loading it back with the same schema gives an equal config."""
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))

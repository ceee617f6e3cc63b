"""Configurations as dataclasses, filled from layered sources.

Precedence, lowest first: the dataclass defaults, defaults computed from what the user chose
(for example the released recipe of the chosen model, or a preset), a YAML file given with
``--config``, and finally options given on the command line. Every dataclass field becomes
a command-line option (``lr_min`` -> ``--lr-min``; booleans get ``--x/--no-x``), so every
setting can be changed either way. ``--print-config`` prints the resolved configuration as
YAML, which can be saved and passed back with ``--config``.

Field metadata understood: ``help`` (str), ``choices`` (sequence), ``cli`` (False hides the
field from the command line; it stays settable from YAML).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Type, TypeVar, Union

from ..errors import LitvitError

__all__ = [
    "ConfigError",
    "setting",
    "add_config_arguments",
    "build_config",
    "load_yaml",
    "config_to_dict",
    "dump_config",
    "merge_into",
]

T = TypeVar("T")


class ConfigError(LitvitError):
    """A configuration file or option is malformed."""


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its ``--help`` text (and optional ``choices`` / ``cli`` metadata).

    Mutable defaults (lists, tuples, dicts) are copied per instance.
    """
    if isinstance(default, (list, tuple, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=dict(help=help, **meta))
    return dataclasses.field(default=default, metadata=dict(help=help, **meta))


def _unwrap_optional(tp: Any) -> Tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_types(cls: Type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: Type, exclude: Iterable[str] = ()) -> None:
    """Add ``--config``, ``--print-config`` and one option per field of ``config_cls``.

    Options default to "not given" (absent from the parsed namespace), which is how
    :func:`build_config` tells explicit command-line choices from defaults.
    """
    parser.add_argument("--config", metavar="YAML", default=None, help="YAML file with settings (command-line options override it)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    hints = _field_types(config_cls)
    exclude = set(exclude)
    group = parser.add_argument_group("settings (also valid as YAML keys, with underscores)")
    for f in dataclasses.fields(config_cls):
        if f.name in exclude or f.metadata.get("cli", True) is False:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        origin = typing.get_origin(tp)
        kwargs: Dict[str, Any] = dict(default=argparse.SUPPRESS, dest=f.name, help=f.metadata.get("help"))
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
        if tp is bool:
            group.add_argument(_option_name(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if origin is dict or tp is dict:
            kwargs["type"] = _yaml_mapping
            kwargs.setdefault("metavar", "YAML")
        elif origin in (tuple, list):
            item = [a for a in typing.get_args(tp) if a is not Ellipsis]
            kwargs["type"] = _scalar_parser(item[0] if item else str, optional)
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = _scalar_parser(tp, optional)
        metavar = f.metadata.get("metavar")
        if metavar:
            kwargs["metavar"] = metavar
        group.add_argument(_option_name(f.name), **kwargs)


def _yaml_mapping(text: str) -> Dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not a YAML mapping: {text!r}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a YAML mapping: {text!r}")
    return value


def _scalar_parser(tp: Any, optional: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if tp is bool:
            return _to_bool(text)
        return tp(text)

    parse.__name__ = getattr(tp, "__name__", "value")  # argparse shows it in error messages
    return parse


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: '{name}' cannot be empty")
    origin = typing.get_origin(tp)
    try:
        if origin in (tuple, list):
            items = [a for a in typing.get_args(tp) if a is not Ellipsis]
            item_tp = items[0] if items else Any
            if not isinstance(value, (list, tuple)):
                value = [value]
            converted = [v if item_tp is Any else _coerce(name, v, item_tp, source) for v in value]
            return tuple(converted) if origin is tuple else list(converted)
        if tp is bool:
            return _to_bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value} is not an integer")
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError("expected a string")
            return str(value)
        if typing.get_origin(tp) is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return dict(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: bad value {value!r} for '{name}': {err}") from None
    return value


def load_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """A YAML mapping from ``path``, with one-line errors for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not a {type(data).__name__}")
    # Accept the dashed spelling of the command line as well.
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge_into(values: Dict[str, Any], layer: Mapping[str, Any], config_cls: Type, source: str) -> None:
    """Validate ``layer`` against the fields of ``config_cls`` and copy it into ``values``."""
    hints = _field_types(config_cls)
    unknown = sorted(set(layer) - set(hints))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    for key, value in layer.items():
        values[key] = _coerce(key, value, hints[key], source)


def build_config(
    config_cls: Type[T],
    args: Optional[argparse.Namespace] = None,
    defaults_fn: Optional[Callable[[Dict[str, Any]], Mapping[str, Any]]] = None,
    yaml_path: Optional[Union[str, os.PathLike]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> T:
    """Resolve a ``config_cls`` instance from its defaults, ``defaults_fn``, YAML and the command line.

    ``defaults_fn`` receives what the user set explicitly (YAML and command line merged)
    and returns defaults that depend on it, e.g. the recipe of the chosen model; the user's
    settings still win over them. ``overrides`` (a mapping) acts like extra command-line options.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    user: Dict[str, Any] = {}
    yaml_path = yaml_path if yaml_path is not None else getattr(args, "config", None)
    if yaml_path:
        merge_into(user, load_yaml(yaml_path), config_cls, f"config file {yaml_path}")
    if args is not None:
        merge_into(user, {k: v for k, v in vars(args).items() if k in names}, config_cls, "command line")
    if overrides:
        merge_into(user, overrides, config_cls, "overrides")
    values: Dict[str, Any] = {}
    if defaults_fn is not None:
        merge_into(values, defaults_fn(dict(user)), config_cls, "defaults")
    values.update(user)
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid configuration: {err}") from None


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain dict (tuples as lists) of a config dataclass; safe to store in a checkpoint."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def dump_config(cfg: Any) -> str:
    """The configuration as YAML (field order kept), loadable again with ``--config``."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)

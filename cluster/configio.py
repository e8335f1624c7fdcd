"""Strict YAML → frozen dataclass conversion, shared by every config section.

Unknown keys, wrong types and values rejected by a section's ``__post_init__``
become a ``ConfigError`` naming the full key path and the file.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from learner.types import ConfigValueError

T = TypeVar("T")


class ConfigError(Exception):
    """A config problem a user must fix: names the key path and the file."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source = source
        self.key = key
        self.message = message


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in the dataclass's form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"expected a mapping, got {type(value).__name__}")
        return build(tp, value, source, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, source)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(source, path, f"must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, path, f"expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, path, f"expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        return _to_float(value, path, source)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {value!r}")
        return value
    raise ConfigError(source, path, f"unsupported field type {_type_name(tp)}")


def _to_float(value: Any, path: str, source: str) -> float:
    # YAML 1.1 reads `3e-5` (no dot) as a string; accept any numeral a user would write.
    if isinstance(value, bool):
        raise ConfigError(source, path, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(source, path, f"expected a number, got {value!r}")


def build(cls: type[T], data: dict[str, Any], source: str, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` strictly; errors name ``path.key`` and ``source``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(source, _join(path, str(unknown[0])), f"unknown key (known: {', '.join(sorted(known))})")
    kwargs = {key: _convert(value, hints[key], _join(path, key), source) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigValueError as err:
        raise ConfigError(source, _join(path, err.key), err.message) from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; problems become ``ConfigError``."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(str(path), "<file>", f"cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<file>", "top level must be a mapping")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a nested mapping copy."""
    if "=" not in assignment:
        raise ConfigError("--set", assignment, "expected KEY=VALUE, for example learner.lr=1e-5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError("--set", key, "empty key component")
    result = dict(data)
    node = result
    for part in parts[:-1]:
        child = node.get(part, {})
        if not isinstance(child, dict):
            raise ConfigError("--set", key, f"{part} is not a section")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return result


def to_plain(config: Any) -> Any:
    """A dataclass tree as plain YAML-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (tuple, list)):
        return [to_plain(v) for v in config]
    if isinstance(config, dict):
        return {k: to_plain(v) for k, v in config.items()}
    return config


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(doc, str):
            docs[node.target.id] = " ".join(doc.split())
    return docs

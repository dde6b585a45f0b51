"""Typed configuration: YAML files validated into nested dataclasses, dotted overrides.

A config schema is a (nested) dataclass. `load_config(Schema, path, ["a.b=3"])` reads the
YAML, applies `--set`-style overrides (values parsed as YAML scalars), checks every key
against the schema and converts values to the annotated types. Unknown keys and values of
the wrong type raise `ConfigError` naming the dotted key.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nclr_core.atomic_write import write_text_atomic

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.lr=0.01"` -> (["train", "lr"], 0.01); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Set each `dotted.key=value` in a nested dict (new intermediate dicts as needed)."""
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return tree


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in
                         enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")


def from_dict(schema: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `schema` from a nested dict, checking keys and types."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {names}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return schema(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass, ready for YAML."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def load_config(schema: type[T], path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> T:
    """Read YAML at `path` (or start from the schema defaults), apply overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    apply_overrides(tree, overrides or [])
    return from_dict(schema, tree)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


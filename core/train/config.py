"""Training settings: a family's defaults overridden by `--set key=value`, typed by the defaults."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.models import ModelSpec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A `--set` override is malformed, names an unknown setting or has a value of the wrong type."""


def parse_value(key: str, text: str, default: Any) -> Any:
    """`text` converted to the type of `default` (bool, int, float or str)."""
    kind = type(default)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise SettingsError(f"setting {key!r} expects {kind.__name__}, got {text!r}") from None
    return text


def check_value(spec: ModelSpec, key: str, value: Any) -> None:
    allowed = spec.choices.get(key)
    if allowed is not None and value not in allowed:
        raise SettingsError(f"setting {key}={value!r} is not one of {', '.join(map(str, allowed))}")


def apply_overrides(
    spec: ModelSpec, overrides: Iterable[str], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`base` (default: the spec's defaults) with each `key=value` applied; errors list the valid keys."""
    settings = dict(spec.defaults if base is None else {**spec.defaults, **base})
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"--set expects key=value, got {item!r}")
        if key not in spec.defaults:
            valid = ", ".join(sorted(spec.defaults))
            raise SettingsError(f"unknown setting {key!r} for family {spec.name}; valid keys: {valid}")
        value = parse_value(key, text.strip(), spec.defaults[key])
        check_value(spec, key, value)
        settings[key] = value
    return settings


def validate_settings(spec: ModelSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings from a form or a saved config: known keys only, right types, allowed choices."""
    out = dict(spec.defaults)
    for key, value in settings.items():
        if key not in spec.defaults:
            raise SettingsError(
                f"unknown setting {key!r} for family {spec.name}; valid keys: "
                f"{', '.join(sorted(spec.defaults))}"
            )
        default = spec.defaults[key]
        if isinstance(value, str) and not isinstance(default, str):
            value = parse_value(key, value, default)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise SettingsError(f"setting {key!r} expects {type(default).__name__}, got {value!r}")
        check_value(spec, key, value)
        out[key] = value
    return out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (core.atomic): readers never see half a file."""
    from core.atomic import atomic_write_json

    atomic_write_json(path, payload, indent=2)

"""Training settings: a family's defaults overridden by `--set key=value`, typed by the defaults."""

from __future__ import annotations

import json
import math
import re
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


# The valid range of a numeric setting, by its name, for every family (first match wins):
# (name pattern, low, low included, high, high included); None = unbounded. A family naming its
# settings in these words gets the check for free; a value outside is refused before training starts.
RANGES: tuple[tuple[str, float | None, bool, float | None, bool], ...] = (
    (r"max_epochs", 1, True, None, False),
    (r".*_epochs?", 0, True, None, False),
    (r"(.*_)?batch_size", 1, True, None, False),
    (r"(.*_)?lr", 0, False, None, False),
    (r"(.*_)?lr_factor", 0, False, 1, False),
    (r"(.*_)?(lr_gamma|lr_decay_rate)", 0, False, 1, True),
    (r"(.*_)?(lr_step|.*_steps)", 1, True, None, False),
    (r"num_workers", 0, True, None, False),
    (r"devices", 0, True, None, False),
    (r"(val|test)_fraction", 0, False, 1, False),
    (r".*_fraction", 0, False, 1, True),
    (r"dropout", 0, True, 1, False),
    (r"(.*_)?patience", 0, True, None, False),
    (r"save_top_k", 1, True, None, False),
    (r"seed", 0, True, 2**32 - 1, True),
    (r"(.*_)?size", 1, True, None, False),
    (r"(weight_decay|.*_std|aug_.*|.*_deg|.*_vox)", 0, True, None, False),
)


def setting_range(key: str) -> tuple[float | None, bool, float | None, bool] | None:
    """(low, low included, high, high included) for a numeric setting named `key`; None: no rule."""
    for pattern, low, low_in, high, high_in in RANGES:
        if re.fullmatch(pattern, key):
            return low, low_in, high, high_in
    return None


def range_text(key: str, value: Any = 0) -> str:
    """`must be >= 1`, `must be in (0, 1)`, ...; "" for a setting without a rule or not a number."""
    found = setting_range(key)
    if found is None or isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    low, low_in, high, high_in = found
    if high is None:
        return f"must be {'>=' if low_in else '>'} {_num(low)}"
    return f"must be in {'[' if low_in else '('}{_num(low)}, {_num(high)}{']' if high_in else ')'}"


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_range(key: str, value: Any) -> None:
    """A SettingsError naming the setting, the value and its range when the value is outside it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"setting {key}={value!r}: must be a finite number")
    found = setting_range(key)
    if found is None:
        return
    low, low_in, high, high_in = found
    too_low = low is not None and (value < low or (value == low and not low_in))
    too_high = high is not None and (value > high or (value == high and not high_in))
    if too_low or too_high:
        raise SettingsError(f"setting {key}={value!r} is out of range: {key} {range_text(key, value)}")


def check_value(spec: ModelSpec, key: str, value: Any) -> None:
    allowed = spec.choices.get(key)
    if allowed is not None and value not in allowed:
        raise SettingsError(f"setting {key}={value!r} is not one of {', '.join(map(str, allowed))}")
    check_range(key, value)


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

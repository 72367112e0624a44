"""`python -m core train ...`: settings from the family's defaults, `--set` overrides, then the engine."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from core.errors import SlicewiseError
from core.models import get_spec
from core.train.config import SettingsError, apply_overrides, read_json, validate_settings


class TrainSettingsError(SlicewiseError, ValueError):
    """Bad family name or `--set` override; the message lists what is valid."""


def _setup_logging() -> None:
    logger = logging.getLogger("slicewise")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def resolve_settings(family: str, out: Path, overrides: list[str], resume: bool = False,
                     preset: str | None = None) -> dict:
    """The family's defaults (or a preset's settings), then (on resume) the run's saved settings,
    then `overrides`."""
    try:
        spec = get_spec(family)
        base = spec.preset_settings(preset) if preset else None
    except KeyError as exc:
        raise TrainSettingsError(str(exc.args[0])) from None
    config = Path(out) / "config.json"
    if resume and config.is_file():
        base = {**(base or {}), **(read_json(config).get("settings") or {})}
    try:
        if base is not None:
            base = validate_settings(spec, base)
        return apply_overrides(spec, overrides, base)
    except SettingsError as exc:
        raise TrainSettingsError(str(exc)) from None


def train_from_cli(family: str, data: Path, out: Path, overrides: list[str], resume: bool = False,
                   preset: str | None = None) -> None:
    """What `python -m core train` and the background jobs run."""
    _setup_logging()
    settings = resolve_settings(family, Path(out), overrides, resume, preset)  # refused before torch loads
    from core.train.loop import fit

    fit(get_spec(family), Path(data), Path(out), settings, resume=resume)

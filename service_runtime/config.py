"""Flags with environment-variable fallbacks (STYLE.md convention 6)."""

from __future__ import annotations

import os


def env_default(name: str, default: str | int | float | None) -> str | int | float | None:
    """Value of environment variable `name` converted to the type of `default`, else `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}

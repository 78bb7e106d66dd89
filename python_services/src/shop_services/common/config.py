"""The one settings parser of the Python services: every setting is an
environment variable (docs/conventions.md lists them), read with the meaning
every language gives it, failing fast with the variable's name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


def find_repo_file(rel: str, start: Path | None = None) -> Path | None:
    """`rel` (a path relative to the repository root, such as
    data/products.json) looked for in start (the working directory by default)
    and then in each of its parents, the one way every language finds the
    repository (docs/conventions.md)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / rel
        if candidate.exists():
            return candidate
    return None


def env_repo_file(name: str, rel: str) -> str:
    """The variable's path, or else find_repo_file(rel); ConfigError naming
    the variable when neither exists."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    found = find_repo_file(rel)
    if found is None:
        raise ConfigError(
            f"environment variable {name} is not set and there is no {rel} in {Path.cwd()} or any parent directory"
        )
    return str(found)


def env_str(name: str, default: str | None = None) -> str:
    """Return the variable, or default; raise ConfigError when neither exists."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"environment variable {name} is required but not set")
    return default


N = TypeVar("N", int, float)


def _env_number(name: str, default: N, parse: Callable[[str], N], kind: str) -> N:
    """The variable parsed by parse, non-negative; default when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be {kind}, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"environment variable {name} must not be negative, got {raw!r}")
    return value


def env_float(name: str, default: float) -> float:
    """Return the variable as a non-negative number of (fractional) seconds."""
    return _env_number(name, default, float, "a number")


def env_int(name: str, default: int) -> int:
    """Return the variable as a non-negative whole number."""
    return _env_number(name, default, int, "a whole number")


LOG_LEVELS = ("debug", "info", "warn", "error")


def env_log_level(name: str = "SHOP_LOG_LEVEL", default: str = "info") -> str:
    """Return the log level (debug, info, warn or error), lower-cased."""
    value = env_str(name, default).lower()
    if value not in LOG_LEVELS:
        raise ConfigError(f"environment variable {name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value

"""Configuration from environment variables, failing fast with the variable's name."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root, for defaults such as data/products.json. Services in a
# container set every path explicitly instead.
REPO_ROOT = Path(__file__).resolve().parents[4]


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


def env_str(name: str, default: str | None = None) -> str:
    """Return the variable, or default; raise ConfigError when neither exists."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"environment variable {name} is required but not set")
    return default


def env_float(name: str, default: float) -> float:
    """Return the variable as a non-negative number of (fractional) seconds."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"environment variable {name} must not be negative, got {raw!r}")
    return value


LOG_LEVELS = ("debug", "info", "warn", "error")


def env_log_level(name: str = "SHOP_LOG_LEVEL", default: str = "info") -> str:
    """Return the log level (debug, info, warn or error), lower-cased."""
    value = env_str(name, default).lower()
    if value not in LOG_LEVELS:
        raise ConfigError(f"environment variable {name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value

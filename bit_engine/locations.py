"""Where BiT Studio keeps its files: one place, so tests can redirect all of it.

Weights are a cache (safe to delete, re-downloadable); runs are user data. Both follow the platform's
conventions through platformdirs, and both can be moved with an environment variable (tests, mirrors,
offline sites, shared machines).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "bit-studio"

#: Environment variables that override the default folders.
CACHE_ENV = "BIT_STUDIO_CACHE_DIR"
DATA_ENV = "BIT_STUDIO_DATA_DIR"


def cache_dir() -> Path:
    """Downloaded and imported weights."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def data_dir() -> Path:
    """User data: training runs."""
    override = os.environ.get(DATA_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))


def weights_dir() -> Path:
    return cache_dir() / "weights"


def runs_dir() -> Path:
    return data_dir() / "runs"

"""Test-wide fixtures: no test touches the real home folder, the network or a real screen."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path, monkeypatch):
    """Point the weights cache and the runs folder at a fresh tmp folder for every test."""
    from bit_engine import locations

    monkeypatch.setenv(locations.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(locations.DATA_ENV, str(tmp_path / "data"))
    # Weights are never fetched from the real host in tests: an unroutable base URL unless a test serves one.
    monkeypatch.setenv("BIT_STUDIO_WEIGHTS_URL", "http://127.0.0.1:9/bit_models")

"""The stable names every widget a person acts on or reads carries: tests, automation and screen readers use them."""

from __future__ import annotations


def named(widget, name: str, accessible: str):
    """`widget` with its objectName (fixed, for tests and automation) and accessible name (for screen readers)."""
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    return widget

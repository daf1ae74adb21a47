"""Sizes and durations as people read them, for messages from the engine and the command line."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """Decimal units, as disks and downloads are labelled: "273.0 MB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_duration(seconds: float) -> str:
    """Compact, for progress bars: "42s", "3m05s", "2h10m"."""
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def describe_duration(seconds: float) -> str:
    """A duration in words for estimates: "1 second", "40 seconds", "1 minute", "12 minutes", "3.5 hours"."""
    if seconds < 89.5:
        return _plural(max(1, round(seconds)), "second")  # "About 1 second" also for a fraction of one
    if seconds < 5400:
        return _plural(round(seconds / 60), "minute")
    return f"{seconds / 3600:.1f} hours"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"

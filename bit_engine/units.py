"""Sizes, durations, counts and lists as people read them, for messages from the engine and the command line."""

from __future__ import annotations

from collections.abc import Sequence


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
        return plural(max(1, round(seconds)), "second")  # "About 1 second" also for a fraction of one
    if seconds < 5400:
        return plural(round(seconds / 60), "minute")
    return f"{seconds / 3600:.1f} hours"


def plural(n: int, noun: str) -> str:
    """A count with its noun: "1 photo", "3 photos" (nouns with a plain -s plural)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def join_and(items: Sequence[str]) -> str:
    """Items as a sentence lists them: "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

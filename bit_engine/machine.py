"""Facts about this machine that the engine sizes its work by (plain Python: no torch)."""

from __future__ import annotations

import os


def available_memory(default: int) -> int:
    """Bytes of RAM that new allocations can have now; `default` where the system does not say.

    On Linux that is MemAvailable: free memory plus the file cache the kernel hands back on demand. Free
    pages alone (`SC_AVPHYS_PAGES`) leave the cache out, and on a machine that has read many files they were
    4.3 GiB of 23 GiB available here.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # macOS and Windows have no such sysconf names
        return default

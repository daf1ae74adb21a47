"""Facts about this machine that the engine sizes its work by (plain Python: no torch)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys


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


def fork_worker_processes() -> None:
    """Start this process's DataLoader workers by fork, as in a command run from a shell (Linux only).

    A process started by spawn (the window's training and timing children) has spawn as its default too.
    Every DataLoader worker would then start a new interpreter and import torch and the engine. That costs
    seconds for each pass over the photos: the head strategy's feature pass over 160 photos took 13.6 s in
    such a child, against 3.7 s with forked workers. These processes run no GUI toolkit, so fork is as safe in
    them as on the command line. Elsewhere (macOS, Windows) the platform's default stays.
    """
    if sys.platform.startswith("linux"):
        multiprocessing.set_start_method("fork", force=True)


def lead_process_group() -> None:
    """Make this process the leader of a process group of its own, which the workers it forks join (POSIX).

    A process stopped by a signal alone leaves its forked DataLoader workers behind: they notice only at
    their next check of their parent, up to 5 s later, and until then they hold the pipe that tells the
    starting process this one has ended, so its `join` waits too. A stop through `stop_with_workers`
    reaches them all at once. Called first in the training children (the window's, and the command line's
    on several GPUs) and in the window's timing child. None of them reads the terminal, and a Ctrl-C reaches
    them as their parent's polite stop, so leaving the terminal's process group changes nothing else.
    """
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)


def stop_with_workers(pid: int, force: bool = False) -> None:
    """Stop process `pid` by signal (SIGTERM; SIGKILL when `force`, where the system has it) and, when it
    leads its own process group (`lead_process_group`), the workers it forked with it. Raises
    ProcessLookupError when the process is gone."""
    sig = getattr(signal, "SIGKILL", signal.SIGTERM) if force else signal.SIGTERM
    if hasattr(os, "killpg"):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
                return
        except (ProcessLookupError, PermissionError):
            pass
    os.kill(pid, sig)

"""How many cores this process may use."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a batch scheduler's cpuset,
    ``docker --cpuset-cpus``) where the OS has one, else every core. Defaults that size thread pools
    and worker processes use this, so that a job pinned to one core does not start two of each."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1

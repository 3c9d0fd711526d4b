"""Peak resident memory of this process, for the benchmarks and memory-bound tests."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """The most resident memory this process has held, in MiB.

    Read from the kernel's high-water mark (VmHWM), which starts afresh at exec: getrusage's ru_maxrss is
    kept across execve on Linux, so a child started by a large process (a long pytest session) would report
    its parent's peak, not its own. ru_maxrss is the fallback where /proc is absent.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # the kernel writes kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

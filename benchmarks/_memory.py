"""Peak memory of the running process, for the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    ``VmHWM`` from ``/proc/self/status`` where Linux has it: ``getrusage``'s
    ``ru_maxrss`` survives ``exec``, so a child started by a large parent would
    report the parent's peak.  Elsewhere ``ru_maxrss`` (KiB on Linux).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

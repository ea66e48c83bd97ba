"""``python -m bench.child SEGMENT.csv``: one dry-run export in a fresh interpreter, then its peak memory.

Prints one JSON line. ``vmhwm_mb`` (the high-water mark of this process's resident set, from
/proc/self/status) is the figure to read: ``ru_maxrss`` can carry the parent's RSS over an exec on Linux
(the kernel keeps the larger of the old and new address space's peaks), so it is reported only beside it.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import orjson


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MB (MiB)
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.child SEGMENT.csv", file=sys.stderr)
        return 2
    from bench.pipeline import run_pipeline  # imported here so the baseline includes the exporter

    baseline = _status_mb("VmRSS")
    seconds, counts = run_pipeline(Path(argv[0]))
    line = {
        "seconds": seconds,
        "baseline_rss_mb": baseline,
        "vmhwm_mb": _status_mb("VmHWM"),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB on Linux
        "received": counts["received"],
        "contacts": counts["contacts"],
    }
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Small measuring helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `xs`."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    vals = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)

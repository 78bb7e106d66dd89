"""CPU time of the stack's processes, from /proc: where a scenario's time goes.

No profiler runs here (py-spy and perf are not on this machine), but the
kernel's per-process CPU accounting says which process saturates: a Python
service whose event loop uses ~1.0 core while the others idle is the
bottleneck, whatever the client sees.
"""

from __future__ import annotations

import os
from pathlib import Path

from shopstack.stack import ENVOY_PROGRAM, Stack

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (a wrapper's real server)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid ... utime(14th field) stime(15th).
        if int(proc.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def programs(stack: Stack) -> dict[str, int]:
    """Each supervisord program's pid (services and Envoy)."""
    found = {}
    for name in [impl.cluster for impl in stack.running_impls()] + [ENVOY_PROGRAM]:
        pid = stack.pid_of(name)
        if pid:
            found[name] = pid
    return found


def sample(pids: dict[str, int]) -> dict[str, float]:
    return {name: _cpu_seconds(pid) for name, pid in pids.items()}


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each program used on average between two samples (only those above 0.02)."""
    used = {name: (after[name] - before.get(name, after[name])) / seconds for name in after}
    return {name: round(value, 2) for name, value in sorted(used.items(), key=lambda kv: -kv[1]) if value >= 0.02}

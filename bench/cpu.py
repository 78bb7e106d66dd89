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
    """utime + stime of one process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command: state ppid ...; utime and stime are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def programs(stack: Stack) -> dict[str, int]:
    """Each supervisord program's pid (services and Envoy), and supervisord's.

    supervisord is counted because it copies every program's stdout (one JSON
    line per RPC from each service, one access-log line per request from
    Envoy) into the log files: that is CPU the stack spends per request.
    """
    found = {}
    own = stack.supervisord_pid()
    if own:
        found["supervisord"] = own
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


def cpu_seconds(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each program used between two samples, unrounded: divided by the
    requests served in the window, the CPU per request."""
    return {name: round(after[name] - before.get(name, after[name]), 4) for name in after}

"""What the figures were measured on: cores, CPU model, tool versions, commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _first_line(args: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else f"unavailable (exit {proc.returncode})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def describe(root: Path, venv_bin: Path, ghz_version: str) -> dict[str, str]:
    """The facts printed at the top of the report."""
    commit = _first_line(["git", "rev-parse", "--short=12", "HEAD"], cwd=root)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False, cwd=root
    )
    dirty = status.returncode == 0 and bool(status.stdout.strip())
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu_model(),
        "load_average_at_start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
        "envoy": _first_line([str(venv_bin / "envoy"), "--version"]).split("version: ")[-1],
        "go": _first_line(["go", "version"]),
        "node": _first_line(["node", "--version"]),
        "python": _first_line([str(venv_bin / "python"), "--version"]),
        "ghz": ghz_version,
        "git_commit": commit + (" (with uncommitted changes in the tree)" if dirty else ""),
    }

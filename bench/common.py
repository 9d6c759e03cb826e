"""Shared pieces: result rows, percentiles, process statistics from /proc, limits, ports."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One line of the table: a measured figure, its goal and, where relevant, how it
    compares with the baseline measured in the same run."""

    figure: str  # "1", "2", ...: which of the benchmarks produced it
    name: str
    value: float | None
    unit: str
    goal: str = ""
    # value / baseline (or baseline / value for latencies), when there is a baseline
    ratio: float | None = None
    # True/False when the goal is numeric and the value is known; None otherwise
    meets_goal: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("value", "ratio"):
            v = d[k]
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class Skipped(Exception):
    """A benchmark cannot run here (missing requirement); the message says why."""


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (thousands of streams need thousands of fds);
    children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, alive: Any = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the process meant to listen on port {port} exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")": state is fields[0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_percent_over(pid: int, window: float) -> float:
    """Percent of one core the process used over the next `window` seconds."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
    }
    with contextlib.suppress(OSError):
        # Other work on the machine skews every figure: record how busy it was.
        info["loadavg"] = list(os.getloadavg())
    with contextlib.suppress(OSError, ValueError):
        info["sched_affinity"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        info["mem_total_kb"] = int(f.readline().split()[1])
    with contextlib.suppress(Exception):
        import grpc

        info["grpcio"] = grpc.__version__
    with contextlib.suppress(Exception):
        import google.protobuf

        info["protobuf"] = google.protobuf.__version__
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        info["git_dirty"] = bool(dirty)
    return info


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    """Wait until `text` appears in the file at `path` (a process's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return
        time.sleep(0.1)
    raise TimeoutError(f"no {text!r} in {path} within {timeout:.0f} s")

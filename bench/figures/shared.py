"""What the figures share: the context a run gives them, the baseline server's process,
and the arithmetic of their rows."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile as prof
from bench.common import (
    PY,
    REPO,
    free_port,
    percentile,
    wait_port,
)
from bench.figures.params import Params

MB = 1024 * 1024


@dataclass
class Ctx:
    """What a figure runs with: the counts, a scratch folder, where profiles go, how to say
    what it is doing, and the baselines measured before it."""

    params: Params
    tmp: Path
    profile_dir: Path | None
    say: Callable[[str], None]
    # Baselines measured earlier in this run, for the ratios.
    baseline: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What figures share for the whole run (the PostgreSQL cluster), closed at its end.
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    shared: dict[str, Any] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def ratio_of(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing, zero or NaN."""
    if value is None or base is None or not base or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def ms(seconds: float) -> float:
    return seconds * 1000.0


def go_args(duration: float, p: Params, warmup: float | None = None) -> dict[str, float]:
    """The `go` message that starts a closed-loop worker, bounded in time and calls."""
    return {
        "duration": duration,
        "max_calls": p.max_calls,
        "warmup": p.warmup if warmup is None else warmup,
    }


@contextlib.contextmanager
def profiled(ctx: Ctx, name: str, pid: int) -> Iterator[None]:
    if ctx.profile_dir is None:
        yield
        return
    with prof.record(pid, ctx.profile_dir / f"profile-{ctx.params.name}" / f"{name}.txt") as rec:
        yield
    ctx.profiles[name] = rec.summary


class EchoServer:
    """`python -m bench.echo` (or another baseline server: `module`) in its own process."""

    def __init__(self, root: Path, module: str = "bench.echo", *args: str) -> None:
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = root / f"{module.rpartition('.')[2]}.log"
        self.argv = [PY, "-m", module, "--listen", self.addr, *args]
        self.popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.port, 30, alive=lambda: self.popen is not None and self.popen.poll() is None)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def __exit__(self, *exc: object) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def cpu_ms_per_call(cpu_s: float, res: dict[str, Any]) -> float:
    """Server CPU a call costs: unlike calls/s, it does not depend on what else runs on the
    machine (the clients share its two cores)."""
    return cpu_s * 1000 / res["calls"] if res["calls"] else math.nan


def loop_stats(res: dict[str, Any]) -> tuple[float, float, float]:
    """Calls per second, p50 and p99 latency (seconds) of a closed loop's result."""
    rate = res["calls"] / res["elapsed"] if res["elapsed"] else math.nan
    return rate, percentile(res["latencies"], 50), percentile(res["latencies"], 99)


def error_counts(*results: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for k, v in (r.get("errors") or {}).items():
            total[k] = total.get(k, 0) + int(v)
    return total


def split(items: list[str], parts: int) -> list[list[str]]:
    """`items` in `parts` consecutive slices, the last one possibly shorter."""
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def shortfall(wanted: int, got: int, details: dict[str, str], what: str) -> str:
    """A note when fewer streams than asked for could be opened, saying why."""
    if got >= wanted:
        return ""
    why = "; ".join(f"{k}: {v}" for k, v in details.items()) or "no error reported"
    return f"only {got} of {wanted} {what} could connect ({why})"

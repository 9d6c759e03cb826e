"""Optional sampling of the control plane with py-spy (`python -m bench --profile`).

py-spy is not a dependency of Sami: install it into the venv by hand
(`.venv/bin/pip install py-spy`). It records raw collapsed stacks of the control-plane
process while a figure is measured; the summary lists where the samples were (self time,
by function, and inclusive time of Sami's own functions)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    if here.is_file():
        return str(here)
    return shutil.which("py-spy")


class Recording:
    def __init__(self, out: Path, rate: int) -> None:
        self.out = out
        self.rate = rate
        self.seconds = 0.0
        self.summary: dict[str, Any] = {}


@contextlib.contextmanager
def record(pid: int, out: Path, rate: int = 200) -> Iterator[Recording]:
    """Sample `pid` while the block runs; the summary is filled in after it."""
    rec = Recording(out, rate)
    exe = py_spy()
    if exe is None:
        rec.summary = {"error": "py-spy not found: .venv/bin/pip install py-spy"}
        yield rec
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--threads",
                "--output",
                str(out),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    t0 = time.monotonic()
    try:
        yield rec
    finally:
        rec.seconds = time.monotonic() - t0
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if out.is_file():
        rec.summary = summarize(out)
        rec.summary["seconds"] = round(rec.seconds, 1)
        # Samples of the busiest thread (the event loop) over the samples it could have had.
        rec.summary["main_thread_busy_pct"] = round(
            100.0 * rec.summary["main_thread_samples"] / max(1.0, rate * rec.seconds), 1
        )
    else:
        rec.summary = {"error": f"py-spy wrote nothing; see {log}"}


def _short(frame: str) -> str:
    """`fn (path/to/file.py:123)` -> `fn (file.py)`, paths made repo-relative."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    with contextlib.suppress(ValueError):
        path = str(Path(path).relative_to(REPO))
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{name} ({path})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares from a raw (collapsed) py-spy file. py-spy leaves
    idle threads out, so the shares are of the time the process was running Python."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    main_thread = 0
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            n = int(count_text)
            thread, *frames = stack.split(";")
            total += n
            if thread.endswith("MainThread"):
                main_thread += n
            if not frames:
                continue
            own[_short(frames[-1])] += n
            for fr in {_short(fr) for fr in frames}:
                if " (sami_control/" in fr and "__main__" not in fr and "cli.py" not in fr:
                    inclusive[fr] += n
    busy = max(1, total)
    return {
        "samples": total,
        "main_thread_samples": main_thread,
        "self_top": [
            {"function": fn, "pct": round(100.0 * n / busy, 1)} for fn, n in own.most_common(top)
        ],
        "sami_inclusive_top": [
            {"function": fn, "pct": round(100.0 * n / busy, 1)}
            for fn, n in inclusive.most_common(top)
        ],
    }


def render(name: str, summary: dict[str, Any]) -> str:
    if "error" in summary:
        return f"{name}: {summary['error']}\n"
    lines = [
        f"== {name}: {summary['samples']} samples over {summary.get('seconds', '?')} s; "
        f"event loop busy {summary.get('main_thread_busy_pct', '?')} % of the time",
        "  self time (% of samples):",
        *(f"    {e['pct']:5.1f}%  {e['function']}" for e in summary["self_top"]),
        "  inclusive, sami_control code (% of samples):",
        *(f"    {e['pct']:5.1f}%  {e['function']}" for e in summary["sami_inclusive_top"]),
    ]
    return "\n".join(lines) + "\n"

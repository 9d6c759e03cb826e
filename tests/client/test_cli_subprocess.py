"""`sami` as CI runs it: a separate process whose stdout is a pipe."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from .cli_result import Result
from .fake_control import ADMIN_TOKEN, REF, FakeControl, FakeServer


def _env(addr: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))}
    env.update(SAMI_ADDR=addr, SAMI_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="")
    return env


def test_progress_streams_live_through_a_pipe(server: FakeServer, control: FakeControl) -> None:
    control.release_on_create = 3
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sami_client",
            "deploy",
            "web",
            "--env",
            "stage",
            "--artifact",
            REF,
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(server.addr),
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    )
    reader.start()
    try:
        # Event #3 must reach us while the deployment is still running: lines are flushed as
        # they happen, not when the process exits.
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while not any("  #3  " in line for line in seen):
            seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        assert process.poll() is None
        control.release("d1")
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    while not lines.empty():
        seen.append(lines.get())
    result = Result(process.returncode, "".join(seen), process.stderr.read())
    process.stderr.close()
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert result.lines[-1].startswith("SUCCEEDED: deployment d1")


def test_unreachable_exits_3(server: FakeServer) -> None:
    addr = server.addr
    server.stop()
    done = subprocess.run(
        [sys.executable, "-m", "sami_client", "get", "d1"],
        capture_output=True,
        text=True,
        env=_env(addr),
        timeout=20,
    )
    assert done.returncode == 3
    assert f"is sami-control running at {addr}?" in done.stderr


def test_a_closed_pipe_exits_141_not_3(server: FakeServer, control: FakeControl) -> None:
    """`sami deploy --wait | head -1`: the reader goes away while sami still prints."""
    control.release_on_create = 3
    process = subprocess.Popen(
        [sys.executable, "-m", "sami_client", "deploy", "web", "--env", "stage",
         "--artifact", REF, "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(server.addr),
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"deployment d1")
        control.wait_sent("d1", 3)
        process.stdout.close()  # `head -1` is done.
        control.release("d1")  # The next events meet the closed pipe.
        assert process.wait(timeout=15) == 141
        err = process.stderr.read().decode()
        assert "Traceback" not in err and "Broken pipe" not in err, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_history_into_head_exits_0(server: FakeServer, control: FakeControl) -> None:
    for _ in range(3):
        control.add_deployment()
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m sami_client history web --env stage | head -1;'
         ' echo "status=${PIPESTATUS[0]}"'],
        capture_output=True,
        text=True,
        env=_env(server.addr),
        timeout=30,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATE"]
    assert lines[-1] in ("status=0", "status=141")

"""Load processes: simulated agents, clients and watchers each run in processes of their own
(multiprocessing, spawn: no grpc state is ever forked), and talk to the orchestrator over a
pipe: the worker says `ready`, waits for `go` (or `stop`), and sends back its `result`."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import raise_fd_limit

_ctx = multiprocessing.get_context("spawn")


class WorkerError(RuntimeError):
    pass


class Link:
    """The worker's end of the pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn

    def send(self, kind: str, payload: Any = None) -> None:
        self._conn.send((kind, payload))

    def recv_blocking(self, kinds: Sequence[str], timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {'/'.join(kinds)} from the orchestrator in {timeout} s")
            if self._conn.poll(min(left, 0.2)):
                kind, payload = self._conn.recv()
                if kind in kinds:
                    return kind, payload

    async def recv(self, kinds: Sequence[str], timeout: float) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.recv_blocking, kinds, timeout)


def _entry(
    fn: Callable[..., Any], conn: multiprocessing.connection.Connection, args: tuple
) -> None:
    raise_fd_limit()
    # The orchestrator stops workers by pid; a worker never outlives it by much either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = Link(conn)
    try:
        fn(link, *args)
    except BaseException:
        with contextlib.suppress(Exception):
            link.send("error", traceback.format_exc())
        raise


class Worker:
    """The orchestrator's handle on one load process."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.name = name
        self._conn, child = _ctx.Pipe()
        self.proc = _ctx.Process(target=_entry, args=(fn, child, args), name=name, daemon=True)

    def start(self) -> Worker:
        self.proc.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, kind: str, payload: Any = None) -> None:
        self._conn.send((kind, payload))

    def recv(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.name}: no {kind} within {timeout:.0f} s")
            if self._conn.poll(min(left, 0.2)):
                try:
                    got, payload = self._conn.recv()
                except EOFError:
                    self.proc.join(1)
                    raise WorkerError(
                        f"worker {self.name} exited ({self.proc.exitcode}) before {kind}"
                    ) from None
                if got == "error":
                    raise WorkerError(f"worker {self.name} failed:\n{payload}")
                if got == kind:
                    return payload
                continue
            if not self.proc.is_alive():
                # Drain what it said before dying.
                if self._conn.poll(0):
                    continue
                raise WorkerError(f"worker {self.name} exited ({self.proc.exitcode}) before {kind}")

    def stop(self, timeout: float = 5.0) -> None:
        """End the process by its pid: SIGTERM, then SIGKILL."""
        if self.proc.pid is None:
            return
        if self.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.join(timeout)
        if self.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(timeout)
        with contextlib.suppress(Exception):
            self.proc.close()
        self._conn.close()


class Workers:
    """A group of workers started together and always stopped together."""

    def __init__(self) -> None:
        self.all: list[Worker] = []

    def add(self, name: str, fn: Callable[..., Any], *args: Any) -> Worker:
        w = Worker(name, fn, *args).start()
        self.all.append(w)
        return w

    def recv_all(self, kind: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [w.recv(kind, max(0.1, deadline - time.monotonic())) for w in self.all]

    def send_all(self, kind: str, payload: Any = None) -> None:
        for w in self.all:
            w.send(kind, payload)

    def stop(self) -> None:
        for w in self.all:
            w.stop()
        self.all.clear()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Real processes for end-to-end tests: the control plane, agents and the CLI, each started
as its own OS process on a loopback port, stopped by pid, with logs kept for failures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))}
    env.update(SAMI_LOG_FORMAT="json", SAMI_LOG_LEVEL="debug", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def offline(data: Path, *args: str, store: str = "") -> str:
    """Run `sami-control ARGS --data DATA` (or `--store URL`) and return its last stdout
    line."""
    where = ["--store", store] if store else ["--data", str(data)]
    out = subprocess.run(
        [PY, "-m", "sami_control", *args, *where],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Proc:
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=base_env)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL, wait: float = 15.0) -> int | None:
        if not self.alive():
            return self.popen.returncode if self.popen else None
        assert self.popen is not None
        os.kill(self.popen.pid, sig)
        try:
            return self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(wait)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ControlPlane:
    """A `sami-control serve` process: on SQLite in tmp/data, or, given `store` (a
    postgresql:// URL), one of the replicas serving that database (`name` tells their
    logs apart)."""

    def __init__(self, tmp: Path, *extra: str, store: str = "", name: str = "control") -> None:
        self.data = tmp / "data"
        self.store = store
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc: Proc | None = None
        self.log_path = tmp / f"{name}.log"

    def start(self) -> ControlPlane:
        self.proc = Proc(
            [
                PY,
                "-m",
                "sami_control",
                "serve",
                "--listen",
                self.addr,
                *(["--store", self.store] if self.store else ["--data", str(self.data)]),
                *self.extra,
            ],
            self.log_path,
        ).start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.alive(), self.proc and self.proc.log()
            with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(self.addr) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
        raise AssertionError(f"control plane not ready:\n{self.proc and self.proc.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        assert self.proc is not None
        return self.proc.kill(sig)

    def token(self, role: str, *scope: str, name: str = "") -> str:
        return offline(
            self.data,
            "token",
            "create",
            "--role",
            role,
            "--name",
            name or f"test-{role}",
            *scope,
            store=self.store,
        )

    def cluster(self, name: str, *envs: str) -> None:
        args = []
        for e in envs:
            args += ["--env", e]
        offline(self.data, "cluster", "create", name, *args, store=self.store)


def agent(
    control: ControlPlane,
    token: str,
    agent_id: str,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> Proc:
    # Its age key in the test's folder (created at start), not in the machine's state folder.
    key_file = str(tmp / f"agent-{agent_id}-age-key.txt")
    return Proc(
        [PY, "-m", "sami_agent", "--control", control.addr, "--agent-id", agent_id, *extra],
        tmp / f"agent-{agent_id}.log",
        env=base_env(SAMI_TOKEN=token, SAMI_KEY_FILE=key_file, **(env or {})),
    ).start()


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def last(self) -> str:
        return self.out.strip().splitlines()[-1] if self.out.strip() else ""


def sami(
    control: ControlPlane,
    token: str,
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Result:
    """Run the `sami` CLI as a CI job would: a real process, SAMI_ADDR/SAMI_TOKEN set."""
    e = base_env(SAMI_ADDR=control.addr, SAMI_TOKEN=token)
    e.update(env or {})
    p = subprocess.run(
        [PY, "-m", "sami_client", *args], capture_output=True, text=True, env=e, timeout=timeout
    )
    return Result(p.returncode, p.stdout, p.stderr)


def sami_popen(
    control: ControlPlane, token: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    e = base_env(SAMI_ADDR=control.addr, SAMI_TOKEN=token)
    e.update(env or {})
    return subprocess.Popen(
        [PY, "-m", "sami_client", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
        start_new_session=True,
    )


@contextlib.contextmanager
def stopping(procs: Sequence[Proc | ControlPlane]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()


def wait_for(
    predicate: object, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64

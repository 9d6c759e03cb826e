"""Observers for fault tests: a load generator that knows which CreateDeployment calls were
acknowledged, and raw watchers that check the server's watch guarantee (ordered, no gap,
no duplicate, resumable) on every reconnect, not through the client's own de-duplication."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import grpc

from sami.v1 import deployment_pb2, deployment_pb2_grpc

TERMINAL = {
    deployment_pb2.SUCCEEDED,
    deployment_pb2.FAILED,
    deployment_pb2.ROLLED_BACK,
    deployment_pb2.CANCELLED,
    deployment_pb2.SUPERSEDED,
}
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Load:
    """Creates deployments until stopped; a request is retried with the same request_id
    until the control plane acknowledges it, as a CI job would. `addr` may list several
    replicas, comma-separated: a call that fails retryably is retried on the next one, as
    the CLI does."""

    addr: str
    token: str
    artifact: str
    services: list[str]
    interval: float = 0.05
    acked: dict[str, str] = field(default_factory=dict)  # request_id -> deployment id
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    # Every retryable failure: (monotonic time, address, code, details).
    failures: list[tuple[float, str, grpc.StatusCode, str]] = field(default_factory=list)

    def run(self) -> None:
        addrs = self.addr.split(",")
        at = 0
        i = 0
        while not self.stop.is_set():
            i += 1
            rid = f"load-{i}"
            req = deployment_pb2.CreateDeploymentRequest(
                service=random.choice(self.services),
                environment="stage",
                artifact=self.artifact,
                request_id=rid,
            )
            while not self.stop.is_set():
                addr = addrs[at % len(addrs)]
                try:
                    with grpc.insecure_channel(addr) as ch:
                        d = deployment_pb2_grpc.DeploymentServiceStub(ch).CreateDeployment(
                            req, metadata=md(self.token), timeout=5
                        )
                    if rid in self.acked and self.acked[rid] != d.id:
                        self.errors.append(f"{rid} acknowledged as {self.acked[rid]} and {d.id}")
                    self.acked[rid] = d.id
                    break
                except grpc.RpcError as e:
                    if e.code() not in RETRYABLE:
                        self.errors.append(f"{rid}: {e.code().name} {e.details()}")
                        break
                    self.failures.append((time.monotonic(), addr, e.code(), e.details() or ""))
                    at += 1
                    time.sleep(0.1)
            time.sleep(self.interval)


@dataclass
class RawWatcher:
    """Watches one deployment to its end across control-plane restarts, checking every
    stream the server sends. `addr` may list several replicas, comma-separated: each
    reconnect goes to the next one."""

    addr: str
    token: str
    deployment_id: str
    sequences: list[int] = field(default_factory=list)
    reconnects: int = 0
    violations: list[str] = field(default_factory=list)
    ended: bool = False
    # When (monotonic) the first stream after a reconnect answered: the watch resumed.
    resumed_at: list[float] = field(default_factory=list)

    def run(self, deadline: float) -> None:
        addrs = self.addr.split(",")
        last = 0
        while time.monotonic() < deadline and not self.ended:
            try:
                with grpc.insecure_channel(addrs[self.reconnects % len(addrs)]) as ch:
                    stream = deployment_pb2_grpc.DeploymentServiceStub(ch).WatchDeployment(
                        deployment_pb2.WatchDeploymentRequest(
                            name=self.deployment_id, after_sequence=last
                        ),
                        metadata=md(self.token),
                        timeout=max(1.0, deadline - time.monotonic()),
                    )
                    first = True
                    answered = False
                    for item in stream:
                        if not answered and self.reconnects:
                            self.resumed_at.append(time.monotonic())
                        answered = True
                        if item.WhichOneof("item") == "deployment":
                            if not first:
                                self.violations.append("snapshot not first")
                            first = False
                            continue
                        e = item.event
                        if e.sequence != last + 1:
                            self.violations.append(
                                f"after {last} got {e.sequence} (reconnect {self.reconnects})"
                            )
                        last = e.sequence
                        self.sequences.append(e.sequence)
                        if e.type == deployment_pb2.STATE_CHANGED and e.state in TERMINAL:
                            self.ended = True
                    if not self.ended:
                        self.violations.append("a stream ended before the terminal event")
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    self.violations.append(f"{e.code().name}: {e.details()}")
                    return
            if not self.ended:
                self.reconnects += 1
                time.sleep(0.1)

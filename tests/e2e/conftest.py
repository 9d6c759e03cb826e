from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sami.v1 import manifest_pb2, manifest_pb2_grpc
from tests import samples
from tests.harness import ControlPlane, Proc, Result, agent, sami

FAST = (
    "--lease-ttl",
    "3",
    "--ack-timeout",
    "3",
    "--heartbeat-interval",
    "0.5",
    "--restart-grace",
    "5",
)
REF = "127.0.0.1:5000/web@sha256:" + "a" * 64


@dataclass
class Stack:
    """A control plane process with a cluster, tokens, synced manifests and an artifact."""

    tmp: Path
    control: ControlPlane
    admin: str
    agent_token: str
    artifact: str = ""
    agents: list[Proc] = field(default_factory=list)

    def agent(self, agent_id: str, *extra: str) -> Proc:
        p = agent(
            self.control,
            self.agent_token,
            agent_id,
            self.tmp,
            "--dry-run",
            "--ledger",
            str(self.ledger),
            *extra,
        )
        self.agents.append(p)
        return p

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.jsonl"

    def sami(self, *args: str, timeout: float = 120) -> Result:
        return sami(self.control, self.admin, *args, timeout=timeout)


def sync(control: ControlPlane, token: str, files: dict[str, bytes] | None = None) -> None:
    """Upload the deployments repo (default: the sample one) as the current revision."""
    files = samples.repo() if files is None else files
    with grpc.insecure_channel(control.addr) as ch:
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    control = ControlPlane(tmp_path, *FAST)
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    control.start()
    s = Stack(tmp_path, control, admin, agent_token)
    try:
        sync(control, admin)
        r = sami(control, admin, "artifact", "register", "web", "--ref", REF)
        assert r.rc == 0, r.err
        s.artifact = r.last
        yield s
    finally:
        for p in s.agents:
            p.kill()
        if control.proc is not None:
            control.kill()

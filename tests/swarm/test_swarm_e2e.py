"""Sami end to end on a real swarm: sami-control, a sami-agent with the Swarm executor and
the sami CLI as real processes, images from a real registry, rollouts watched live."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sami.v1 import manifest_pb2, manifest_pb2_grpc
from sami_agent.executor import Outcome
from sami_agent.executors.swarm import SwarmExecutor
from sami_dev.devswarm import DevSwarm
from tests.harness import ControlPlane, Proc, Result, agent, sami, wait_for
from tests.swarm.conftest import Image, Images
from tests.swarm.test_swarm_executor import STACK, job

pytestmark = pytest.mark.timeout(300)

FAST = ("--lease-ttl", "4", "--ack-timeout", "4", "--heartbeat-interval", "0.5")
MANIFEST = """\
version: v1beta
service_name: {service}
type: swarm
stack_files: [stack.yml]
image_services: [web]
converge_timeout: 90s
{extra}"""


def deployments_repo(services: list[str]) -> dict[str, bytes]:
    files = {"README.md": b"# deployments\n"}
    for svc in services:
        for env in ("stage", "production", "pull_request"):
            folder = f"services/{svc}/swarm/{env}"
            extra = "pr_deploy: true\n" if env == "pull_request" else ""
            files[f"{folder}/sami.yaml"] = MANIFEST.format(service=svc, extra=extra).encode()
            files[f"{folder}/stack.yml"] = STACK.encode()
    return files


@dataclass
class Sami:
    tmp: Path
    devswarm: DevSwarm
    control: ControlPlane
    admin: str
    agent_token: str
    agents: list[Proc] = field(default_factory=list)

    def agent(self, agent_id: str, *extra: str) -> Proc:
        p = agent(self.control, self.agent_token, agent_id, self.tmp, *extra, env=self.devswarm.env)
        self.agents.append(p)
        return p

    def sami(self, *args: str, timeout: float = 200) -> Result:
        return sami(self.control, self.admin, *args, timeout=timeout)

    def register(self, service: str, image: Image) -> str:
        r = self.sami("artifact", "register", service, "--ref", image.ref)
        assert r.rc == 0, r.err
        return r.last

    def deploy_wait(self, service: str, env: str, artifact: str, *extra: str) -> Result:
        return self.sami(
            "deploy",
            service,
            "--env",
            env,
            "--artifact",
            artifact,
            "--wait",
            "--timeout",
            "180",
            *extra,
        )

    def running(self, stack: str) -> list[str]:
        tasks = self.devswarm.client().api.tasks(filters={"service": f"{stack}_web"})
        return sorted(
            t["Spec"]["ContainerSpec"]["Image"]
            for t in tasks
            if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
        )


SERVICES = ["shop-a", "shop-b", "shop-c", "shop-d", "shop-e", "shop-f", "shop-g"]


@contextlib.contextmanager
def running(tmp_path: Path, devswarm: DevSwarm, files: dict[str, bytes]) -> Iterator[Sami]:
    """sami-control (cluster `local` serving every environment, an admin and an agent
    token) with `files` synced as the deployments repo; agents started with Sami.agent and
    the control plane are stopped at the end."""
    control = ControlPlane(tmp_path, *FAST)
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    agent_token = control.token("agent", "--cluster", "local", name="manager")
    control.start()
    s = Sami(tmp_path, devswarm, control, admin, agent_token)
    try:
        with grpc.insecure_channel(control.addr) as ch:
            manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
                manifest_pb2.SyncManifestsRequest(
                    files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
                ),
                metadata=(("authorization", f"Bearer {admin}"),),
                timeout=10,
            )
        yield s
    finally:
        for p in s.agents:
            p.kill()
        control.kill()


@pytest.fixture
def live(tmp_path: Path, devswarm: DevSwarm) -> Iterator[Sami]:
    with running(tmp_path, devswarm, deployments_repo(SERVICES)) as s:
        yield s


def test_rollout_update_and_health_rollback(live: Sami, images: Images) -> None:
    live.agent("m1")
    v1, v2, v3 = (live.register("shop-a", i) for i in (images.v1, images.v2, images.v3))
    first = live.deploy_wait("shop-a", "stage", v1)
    assert first.rc == 0, first.out + first.err
    assert "2/2 running (new)" in first.out
    second = live.deploy_wait("shop-a", "stage", v2)
    assert second.rc == 0, second.out + second.err
    assert "running (healthy)" in second.out and "update" in second.out
    assert live.running("stage_shop-a") == [images.v2.ref] * 2
    third = live.deploy_wait("shop-a", "stage", v3)
    assert third.rc == 1, third.out + third.err
    assert "ROLLED_BACK" in third.out and "health" in third.out
    assert live.running("stage_shop-a") == [images.v2.ref] * 2


def test_digest_missing_from_the_registry_fails_with_its_reason(live: Sami, images: Images) -> None:
    live.agent("m1")
    missing = dataclasses.replace(images.v1, ref=images.v1.tagless_repo + "@sha256:" + "e" * 64)
    art = live.register("shop-b", missing)
    r = live.deploy_wait("shop-b", "stage", art)
    assert r.rc == 1
    assert "FAILED" in r.out and "manifest unknown" in r.out.lower()


def test_agent_killed_mid_rollout_is_redelivered_and_applied_once(
    live: Sami, images: Images
) -> None:
    m1 = live.agent("m1")
    wait_for(lambda: "m1" in live.sami("agents").out, what="m1 connected")
    art = live.register("shop-c", images.v1)
    dep = live.sami("deploy", "shop-c", "--env", "stage", "--artifact", art).last

    def converging() -> bool:
        r = live.sami("watch", dep, "--timeout", "1", "--output", "json")
        return '"converge"' in r.out

    wait_for(converging, timeout=60, interval=0.2, what="the rollout to start")
    m1.kill(signal.SIGKILL)
    live.agent("m2")
    w = live.sami("watch", dep, "--timeout", "180", "--output", "json")
    assert w.rc == 0, w.out + w.err
    events = [
        json.loads(line)["event"] for line in w.out.splitlines() if line.startswith('{"event"')
    ]
    messages = [str(e.get("message", "")) for e in events]
    assert sum("docker stack deploy" in m for m in messages) == 1, messages
    assert any("already applied" in m for m in messages), messages
    assert live.running("stage_shop-c") == [images.v1.ref] * 2


def test_cancel_mid_rollout_rolls_back(live: Sami, images: Images) -> None:
    live.agent("m1")
    v1, v2 = live.register("shop-d", images.v1), live.register("shop-d", images.v2)
    assert live.deploy_wait("shop-d", "stage", v1).rc == 0
    dep = live.sami("deploy", "shop-d", "--env", "stage", "--artifact", v2).last
    wait_for(
        lambda: '"converge"' in live.sami("watch", dep, "--timeout", "1", "--output", "json").out,
        timeout=60,
        interval=0.2,
        what="the update to start",
    )
    assert live.sami("cancel", dep).rc == 0
    w = live.sami("watch", dep, "--timeout", "180")
    assert w.rc == 1 and "CANCELLED" in w.out, w.out + w.err
    assert live.running("stage_shop-d") == [images.v1.ref] * 2


def test_orphan_preview_is_torn_down_by_reconciliation(
    live: Sami, images: Images, executor: SwarmExecutor
) -> None:
    # A preview stack Sami deployed but this control plane has no record of (a teardown
    # that was missed, a lost database): the agent reports it and it is removed.
    orphan = dataclasses.replace(
        job("pr-9_shop-e", images.v1, "dep_lost"),
        service="shop-e",
        pull_request=9,
        environment="pull_request",
    )
    result = executor.execute(orphan, lambda p, m: None, threading.Event())
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    live.agent("m1", "--inventory-interval", "1")
    client = live.devswarm.client()
    wait_for(
        lambda: (
            not client.services.list(filters={"label": "com.docker.stack.namespace=pr-9_shop-e"})
        ),
        timeout=90,
        interval=0.5,
        what="the orphan preview to be removed",
    )
    history = live.sami("list", "--service", "shop-e", "--output", "json")
    (teardown,) = json.loads(history.out)
    assert teardown["action"] == "teardown"
    done = live.sami("watch", teardown["id"], "--timeout", "60")
    assert done.rc == 0, done.out + done.err
    assert "removed preview stack pr-9_shop-e" in done.out


def test_rollback_any_depth_and_promote_the_same_digest(live: Sami, images: Images) -> None:
    live.agent("m1")
    v1, v2 = live.register("shop-f", images.v1), live.register("shop-f", images.v2)
    first = live.deploy_wait("shop-f", "stage", v1)
    assert first.rc == 0, first.out + first.err
    assert live.deploy_wait("shop-f", "stage", v2).rc == 0
    history = live.sami("history", "shop-f", "--env", "stage", "--output", "json")
    v1_dep = json.loads(history.out)[-1]["id"]
    back = live.sami(
        "rollback", "shop-f", "--env", "stage", "--to", v1_dep, "--wait", "--timeout", "180"
    )
    assert back.rc == 0, back.out + back.err
    assert live.running("stage_shop-f") == [images.v1.ref] * 2
    promoted = live.sami(
        "promote", "shop-f", "--from", "stage", "--to", "production", "--wait", "--timeout", "180"
    )
    assert promoted.rc == 0, promoted.out + promoted.err
    assert live.running("production_shop-f") == [images.v1.ref] * 2


def test_preview_deploy_and_teardown(live: Sami, images: Images) -> None:
    live.agent("m1")
    art = live.register("shop-g", images.v1)
    up = live.deploy_wait("shop-g", "pull_request", art, "--pr", "12")
    assert up.rc == 0, up.out + up.err
    assert live.running("pr-12_shop-g") == [images.v1.ref] * 2
    down = live.sami("teardown", "shop-g", "--pr", "12", "--wait", "--timeout", "120")
    assert down.rc == 0, down.out + down.err
    client = live.devswarm.client()
    assert not client.services.list(filters={"label": "com.docker.stack.namespace=pr-12_shop-g"})
    refused = live.sami("deploy", "shop-g", "--env", "pull_request", "--pr", "0", "--artifact", art)
    assert refused.rc == 2

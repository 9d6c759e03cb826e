"""Live status and drift on a real swarm (docs/status.md): sami-control, a sami-agent with
the Swarm executor and the sami CLI as real processes. A service changed by hand shows as
drift within 5 s with the right reason; scaled down by hand, as replicas short; with its
agent gone, as stale."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from sami.v1 import (
    deployment_pb2,
    deployment_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from sami_dev.devswarm import DevSwarm
from tests.harness import wait_for
from tests.swarm.conftest import Images
from tests.swarm.test_swarm_e2e import SERVICES, Sami, deployments_repo, live

__all__ = ["live"]  # the fixture, for pytest

pytestmark = pytest.mark.timeout(300)

# The bound: a manual change is visible as drift within this long.
DRIFT_VISIBLE = 5.0


def docker(devswarm: DevSwarm, *args: str) -> None:
    proc = subprocess.run(
        ["docker", *args], env=devswarm.env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def rows(live: Sami, service: str) -> Iterator[status_pb2.ServiceStatus]:
    with grpc.insecure_channel(live.control.addr) as ch:
        response = status_pb2_grpc.StatusServiceStub(ch).GetStatus(
            status_pb2.GetStatusRequest(service=service),
            metadata=(("authorization", f"Bearer {live.admin}"),),
            timeout=5,
        )
    yield from response.services


def until_drift(live: Sami, service: str, prefix: str) -> float:
    """Seconds until GetStatus shows `service` drifted with a reason starting `prefix`."""
    start = time.monotonic()
    while time.monotonic() - start < 30:
        if any(r.drifted and r.drift_reason.startswith(prefix) for r in rows(live, service)):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{service}: no {prefix!r} drift within 30 s: {list(rows(live, service))}")


def status_json(live: Sami, service: str) -> list[dict[str, object]]:
    r = live.sami("status", service, "--env", "stage", "--output", "json")
    assert r.rc == 0, r.err
    services: list[dict[str, object]] = json.loads(r.out)["services"]
    return services


def test_drift_by_hand_then_healed_scaled_and_stale(
    live: Sami, images: Images, devswarm: DevSwarm
) -> None:
    agent = live.agent("m1")
    v1 = live.register("shop-f", images.v1)
    first = live.deploy_wait("shop-f", "stage", v1)
    assert first.rc == 0, first.out + first.err
    swarm_name = "stage_shop-f_web"

    def reported() -> bool:
        return any(r.running_replicas == 2 for r in rows(live, "shop-f"))

    wait_for(reported, timeout=30, what="the agent's live status of shop-f")
    (row,) = status_json(live, "shop-f")
    assert row["running_digest"] == images.v1.digest and not row["drifted"], row
    assert row["artifact_name"] == "shop-f" and row["stale"] is False

    # Someone changes the image by hand.
    docker(devswarm, "service", "update", "--detach", "--image", images.v2.ref, swarm_name)
    took = until_drift(live, "shop-f", "image: runs")
    assert took < DRIFT_VISIBLE, took
    (row,) = status_json(live, "shop-f")
    assert str(row["drift_reason"]).startswith(
        f"image: runs {images.v2.digest[:19]}, Sami deployed {images.v1.digest[:19]}"
    ), row
    audit = live.sami("audit", "--service", "shop-f")
    assert "drift.detected" in audit.out, audit.out + audit.err

    # Sami deploys again: live is what Sami deployed, the drift has ended.
    again = live.deploy_wait("shop-f", "stage", v1)
    assert again.rc == 0, again.out + again.err
    wait_for(
        lambda: all(not r.drifted for r in rows(live, "shop-f")),
        timeout=30,
        what="the drift to end",
    )

    # The history keeps the record: why, from when, until when (it ends with the agent's
    # next report; status judges at read time, so it may show the end sooner).
    def recorded() -> bool:
        history = live.sami("history", "shop-f", "--env", "stage")
        assert history.rc == 0, history.err
        return (
            f"): {swarm_name}: image: runs {images.v2.digest[:19]}" in history.err
            and "drift (ended " in history.err
        )

    wait_for(recorded, timeout=90, interval=1, what="the ended drift record in sami history")

    # Scaled down by hand.
    docker(devswarm, "service", "scale", "--detach", f"{swarm_name}=1")
    took = until_drift(live, "shop-f", "replicas: scaled to 1 outside Sami (Sami deployed 2)")
    assert took < DRIFT_VISIBLE, took

    # The agent is gone: what it last said is shown, marked stale.
    agent.kill(signal.SIGKILL)
    wait_for(lambda: all(r.stale for r in rows(live, "shop-f")), timeout=30, what="stale rows")
    (row,) = status_json(live, "shop-f")
    assert row["stale"] is True and row["drifted"] is True, row
    table = live.sami("status", "shop-f")
    assert "STALE" in table.out and "DRIFT: replicas" in table.out, table.out


def test_on_drift_redeploy_puts_the_deployed_digest_back(
    live: Sami, images: Images, devswarm: DevSwarm
) -> None:
    files = deployments_repo([*SERVICES, "heal"])
    files["services/heal/swarm/stage/sami.yaml"] += b"on_drift: redeploy\n"
    with grpc.insecure_channel(live.control.addr) as ch:
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
            ),
            metadata=(("authorization", f"Bearer {live.admin}"),),
            timeout=10,
        )
    live.agent("m1")
    v1 = live.register("heal", images.v1)
    first = live.deploy_wait("heal", "stage", v1)
    assert first.rc == 0, first.out + first.err
    wait_for(lambda: any(rows(live, "heal")), timeout=30, what="the live status of heal")

    docker(devswarm, "service", "update", "--detach", "--image", images.v2.ref, "stage_heal_web")
    until_drift(live, "heal", "image: runs")

    def healed() -> bool:
        return live.running("stage_heal") == [images.v1.ref] * 2 and all(
            not r.drifted and r.running_digest == images.v1.digest for r in rows(live, "heal")
        )

    wait_for(healed, timeout=150, interval=0.5, what="the drift healed by a redeploy")
    with grpc.insecure_channel(live.control.addr) as ch:
        listed = (
            deployment_pb2_grpc.DeploymentServiceStub(ch)
            .ListDeployments(
                deployment_pb2.ListDeploymentsRequest(service="heal", environment="stage"),
                metadata=(("authorization", f"Bearer {live.admin}"),),
                timeout=10,
            )
            .deployments
        )
    healers = [d for d in listed if d.created_by == "sami (drift)"]
    assert len(healers) == 1, listed
    assert healers[0].reason.startswith("on_drift: redeploy (image: runs"), healers[0]

"""What one agent token can do to agents and deployments of other clusters: nothing. Run
against the real server over a loopback socket, with agent streams driven by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from sami.v1 import admin_pb2, agent_pb2, artifact_pb2, cluster_pb2, deployment_pb2
from sami_control import offline
from tests.security.conftest import (
    REF,
    AgentStream,
    Server,
    Stubs,
    create,
    md,
    sync_request,
)


def _agents(s: Stubs, token: str, cluster: str = "") -> list[tuple[str, str, bool]]:
    resp = s.clu.ListAgents(cluster_pb2.ListAgentsRequest(cluster=cluster), metadata=md(token))
    return [(a.cluster, a.agent_id, a.connected) for a in resp.agents]


def _audit(s: Stubs, admin: str, action: str) -> list[admin_pb2.AuditEntry]:
    entries = s.audit.ListAudit(admin_pb2.ListAuditRequest(page_size=1000), metadata=md(admin))
    return [e for e in entries.entries if e.action == action]


def seed_two_clusters(srv: Server, admin: str) -> tuple[Stubs, str]:
    """Cluster c1 serves stage and production, c2 previews; manifests; artifact web."""
    offline.add_cluster(srv.data, "c1", ["stage", "production"])
    offline.add_cluster(srv.data, "c2", ["pull_request"])
    s = Stubs(srv.channel())
    s.man.SyncManifests(sync_request(), metadata=md(admin))
    art = s.art.RegisterArtifact(
        artifact_pb2.RegisterArtifactRequest(
            artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
        ),
        metadata=md(admin),
    ).artifact.id
    return s, art


def test_an_agent_id_of_another_cluster_cannot_take_over_its_session(
    serve: Callable[..., Server],
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed_two_clusters(srv, admin)
    prod_token = srv.token("agent", "prod-agent", cluster="c1")
    stage_token = srv.token("agent", "stage-agent", cluster="c2")

    real = AgentStream(s, prod_token, "mgr-1")
    assert real.welcomed.wait(10)
    dep = create(s, admin, art, "production")
    assign = real.wait_for("assignment").assignment
    real.send(
        ack=agent_pb2.Ack(
            deployment_id=dep, lease_id=assign.lease_id, epoch=assign.deployment.epoch
        )
    )

    # The attack: another cluster's token, the production agent's id.
    impostor = AgentStream(s, stage_token, "mgr-1")
    assert impostor.done.wait(10)
    assert impostor.code is grpc.StatusCode.FAILED_PRECONDITION, impostor.code
    assert "connected in another cluster" in impostor.details
    assert "--agent-id" in impostor.details
    refused = _audit(s, admin, "agent.connect")
    assert [(e.target, e.outcome) for e in refused if e.outcome != "ok"] == [
        ("mgr-1", "FAILED_PRECONDITION")
    ]

    # The real agent kept its stream, and gets its cluster's commands.
    time.sleep(0.3)
    assert not real.done.is_set()
    assert _agents(s, admin) == [("c1", "mgr-1", True)]
    n = len(real.received)
    dep2 = create(s, admin, art, "stage")
    assign2 = real.wait_for("assignment", after=n).assignment
    assert assign2.deployment.id == dep2
    real.send(
        ack=agent_pb2.Ack(
            deployment_id=dep2, lease_id=assign2.lease_id, epoch=assign2.deployment.epoch
        )
    )
    n = len(real.received)
    s.dep.CancelDeployment(deployment_pb2.CancelDeploymentRequest(name=dep), metadata=md(admin))
    assert real.wait_for("cancel", after=n).cancel.deployment_id == dep

    # Once the production agent is gone, the id may be used in c2: each cluster keeps its
    # own record, and c1's commands never reach c2's agent of the same id.
    real.close()
    deadline = time.monotonic() + 5
    while _agents(s, admin, "c1") != [("c1", "mgr-1", False)]:
        assert time.monotonic() < deadline, _agents(s, admin)
        time.sleep(0.05)
    second = AgentStream(s, stage_token, "mgr-1")
    assert second.welcomed.wait(10)
    assert _agents(s, admin) == [("c1", "mgr-1", False), ("c2", "mgr-1", True)]
    assert _agents(s, admin, "c2") == [("c2", "mgr-1", True)]
    # dep2 is still leased to c1's mgr-1: cancelling it sends nothing to c2's mgr-1.
    s.dep.CancelDeployment(deployment_pb2.CancelDeploymentRequest(name=dep2), metadata=md(admin))
    time.sleep(0.5)
    kinds = [m.WhichOneof("msg") for m in second.received]
    assert kinds == ["welcome"], kinds
    second.close()

"""What one agent token can do to agents and deployments of other clusters: nothing. Run
against the real server over a loopback socket, with agent streams driven by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from sami.v1 import admin_pb2, agent_pb2, artifact_pb2, cluster_pb2, deployment_pb2
from sami_control import offline
from sami_control.core.settings import Settings
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


def _stale(n: int) -> list[agent_pb2.HeldLease]:
    return [
        agent_pb2.HeldLease(deployment_id=f"dep_fake{i}", lease_id=f"lease_fake{i}", epoch=1)
        for i in range(n)
    ]


def test_what_one_hello_or_heartbeat_may_carry_is_bounded(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed_two_clusters(srv, admin)
    token = srv.token("agent", cluster="c1")

    many_caps = AgentStream(s, token, "caps", capabilities=[f"cap{i}" for i in range(33)])
    assert many_caps.done.wait(10)
    assert many_caps.code is grpc.StatusCode.INVALID_ARGUMENT
    assert many_caps.fields == ["hello.capabilities"]
    many_held = AgentStream(s, token, "held", held_leases=_stale(1001))
    assert many_held.done.wait(10)
    assert many_held.code is grpc.StatusCode.INVALID_ARGUMENT
    assert many_held.fields == ["hello.held_leases"]

    agent = AgentStream(s, token, "mgr-1", capabilities=[f"cap{i}" for i in range(31)] + ["swarm"])
    assert agent.welcomed.wait(10)
    # Over the limit: refused whole (no ack, no revoke), audited; the stream goes on.
    n = len(agent.received)
    agent.send(heartbeat=agent_pb2.Heartbeat(leases=_stale(1001)))
    time.sleep(0.5)
    assert agent.received[n:] == [] and not agent.done.is_set()
    refused = [e for e in _audit(s, admin, "agent.report") if e.outcome == "INVALID_ARGUMENT"]
    assert len(refused) == 1 and "1001 leases" in refused[0].detail
    # Within it: the stale leases are revoked, at most 100 per heartbeat.
    agent.send(heartbeat=agent_pb2.Heartbeat(leases=_stale(300)))
    agent.wait_for("heartbeat_ack", after=n)
    time.sleep(0.3)
    kinds = [m.WhichOneof("msg") for m in agent.received[n:]]
    assert kinds.count("revoke") == 100 and kinds.count("heartbeat_ack") == 1
    agent.close()


def test_progress_over_the_rate_limit_is_dropped(serve: Callable[..., Server]) -> None:
    srv = serve(Settings(max_progress_per_second=0.5, progress_burst=5))
    admin = srv.token("admin")
    s, art = seed_two_clusters(srv, admin)
    agent = AgentStream(s, srv.token("agent", cluster="c1"))
    assert agent.welcomed.wait(10)
    dep = create(s, admin, art, "stage")
    a = agent.wait_for("assignment").assignment
    lease = {"deployment_id": dep, "lease_id": a.lease_id, "epoch": a.deployment.epoch}
    for i in range(1, 21):
        agent.send(progress=agent_pb2.Progress(sequence=i, message=f"line {i}", **lease))
    n = len(agent.received)
    agent.send(result=agent_pb2.Result(outcome=agent_pb2.OUTCOME_SUCCEEDED, **lease))
    agent.wait_for("done", after=n)
    req = deployment_pb2.WatchDeploymentRequest(name=dep)
    events = [r.event for r in s.dep.WatchDeployment(req, metadata=md(admin), timeout=10)]
    lines = [e.message for e in events if e.message.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, 6)]
    agent.close()


def test_agents_are_listed_in_pages_and_an_admin_removes_a_gone_one(
    serve: Callable[..., Server],
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed_two_clusters(srv, admin)
    token = srv.token("agent", cluster="c1")
    for i in range(5):
        st = AgentStream(s, token, f"host-{i}")
        assert st.welcomed.wait(10)
        st.close()
    live = AgentStream(s, token, "host-live")
    assert live.welcomed.wait(10)

    seen: list[str] = []
    page_token = ""
    pages = 0
    while True:
        resp = s.clu.ListAgents(
            cluster_pb2.ListAgentsRequest(page_size=2, page_token=page_token), metadata=md(admin)
        )
        seen += [a.agent_id for a in resp.agents]
        pages += 1
        page_token = resp.next_page_token
        if not page_token:
            break
    assert seen == [f"host-{i}" for i in range(5)] + ["host-live"] and pages == 3
    with pytest.raises(grpc.RpcError) as err:
        s.clu.ListAgents(cluster_pb2.ListAgentsRequest(page_token="nope"), metadata=md(admin))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    def remove(token: str, agent_id: str, cluster: str = "c1") -> grpc.StatusCode:
        try:
            s.clu.RemoveAgent(
                cluster_pb2.RemoveAgentRequest(cluster=cluster, agent_id=agent_id),
                metadata=md(token),
            )
        except grpc.RpcError as e:
            return e.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert remove(srv.token("deployer", "ci"), "host-0") is grpc.StatusCode.PERMISSION_DENIED
    assert remove(admin, "host-live") is grpc.StatusCode.FAILED_PRECONDITION
    assert remove(admin, "host-0", "c2") is grpc.StatusCode.NOT_FOUND
    assert remove(admin, "host-0") is grpc.StatusCode.OK
    assert remove(admin, "host-0") is grpc.StatusCode.NOT_FOUND
    assert "host-0" not in [a[1] for a in _agents(s, admin)]
    outcomes = [(e.target, e.outcome) for e in _audit(s, admin, "agent.remove")]
    assert ("c1/host-0", "ok") in outcomes and ("c1/host-live", "FAILED_PRECONDITION") in outcomes
    live.close()

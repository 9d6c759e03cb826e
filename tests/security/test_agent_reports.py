"""What an agent reports is never lost for its text: a report with too long a text or a
control character is cleaned and stored, and a result always ends its deployment (one left
IN_PROGRESS is a service and environment blocked for good). Over a real agent stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sami.v1 import agent_pb2, deployment_pb2
from sami_common import limits
from tests.security.conftest import AgentStream, Server, Stubs, create, md, seed


def _leased(
    s: Stubs, admin: str, art: str, agent: AgentStream, env: str, **kw: Any
) -> agent_pb2.Assignment:
    n = len(agent.received)
    dep = create(s, admin, art, env, **kw)
    a = agent.wait_for("assignment", after=n).assignment
    assert a.deployment.id == dep
    agent.send(ack=agent_pb2.Ack(deployment_id=dep, lease_id=a.lease_id, epoch=a.deployment.epoch))
    return a


def _history(s: Stubs, token: str, dep: str) -> list[deployment_pb2.WatchDeploymentResponse]:
    """Everything a watcher sees of `dep`, which has ended."""
    req = deployment_pb2.WatchDeploymentRequest(name=dep)
    return list(s.dep.WatchDeployment(req, metadata=md(token), timeout=10))


def test_a_result_with_a_long_reason_and_control_characters_ends_its_deployment(
    serve: Callable[..., Server],
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    agent = AgentStream(s, srv.token("agent", cluster="c1"))
    assert agent.welcomed.wait(10)
    a = _leased(s, admin, art, agent, "stage")
    dep, lease, epoch = a.deployment.id, a.lease_id, a.deployment.epoch

    agent.send(
        progress=agent_pb2.Progress(
            deployment_id=dep,
            lease_id=lease,
            epoch=epoch,
            sequence=1,
            phase="pull\x00",
            message="p" * 5000,
        )
    )
    reason = "\x1b[31mHTTP 500\u202e\n" + "r" * 10_000
    n = len(agent.received)
    agent.send(
        result=agent_pb2.Result(
            deployment_id=dep,
            lease_id=lease,
            epoch=epoch,
            outcome=agent_pb2.OUTCOME_FAILED,
            reason=reason,
        )
    )
    assert agent.wait_for("done", after=n).done.deployment_id == dep

    got = s.dep.GetDeployment(deployment_pb2.GetDeploymentRequest(name=dep), metadata=md(admin))
    assert got.state == deployment_pb2.FAILED
    assert got.status_message.startswith("\\x1b[31mHTTP 500\\u202e\\nrrr")
    assert len(got.status_message) == limits.MAX_REASON
    assert got.status_message.endswith("…")
    progress = [r.event for r in _history(s, admin, dep) if r.event.phase.startswith("pull")]
    assert [(e.phase, len(e.message), e.message[-1]) for e in progress] == [
        ("pull\\x00", limits.MAX_PROGRESS_MESSAGE, "…")
    ]
    agent.close()


def test_a_result_without_an_outcome_ends_its_deployment_failed(
    serve: Callable[..., Server],
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    agent = AgentStream(s, srv.token("agent", cluster="c1"))
    assert agent.welcomed.wait(10)
    a = _leased(s, admin, art, agent, "stage")
    n = len(agent.received)
    agent.send(
        result=agent_pb2.Result(
            deployment_id=a.deployment.id,
            lease_id=a.lease_id,
            epoch=a.deployment.epoch,
            reason="it went fine",
        )
    )
    assert agent.wait_for("done", after=n).done.deployment_id == a.deployment.id
    got = s.dep.GetDeployment(
        deployment_pb2.GetDeploymentRequest(name=a.deployment.id), metadata=md(admin)
    )
    assert got.state == deployment_pb2.FAILED
    assert "no valid outcome" in got.status_message
    assert got.status_message.endswith(": it went fine")
    # The service and environment are free again: the next deployment (of the same
    # artifact: a FAILED one is not quarantined) is assigned.
    again = _leased(s, admin, art, agent, "stage")
    assert again.deployment.id != a.deployment.id
    agent.close()

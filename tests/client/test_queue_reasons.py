"""`sami queue`: why a QUEUED deployment waits, the first reason that applies."""

from __future__ import annotations

from sami.v1 import cluster_pb2, deployment_pb2, lock_pb2
from sami_client.safety_cmd import why_waiting

QUEUED = deployment_pb2.Deployment(
    id="dep_q", service="web", environment="production", cluster="c1", state=deployment_pb2.QUEUED
)
RUNNING = deployment_pb2.Deployment(
    id="dep_r", service="web", environment="production", state=deployment_pb2.IN_PROGRESS
)
ELSEWHERE = deployment_pb2.Deployment(
    id="dep_s", service="web", environment="stage", state=deployment_pb2.IN_PROGRESS
)
CONNECTED = [cluster_pb2.Agent(agent_id="a1", connected=True)]


def test_a_lock_comes_first() -> None:
    lock = lock_pb2.Lock(environment="production", holder="alice", reason="freeze")
    why = why_waiting(QUEUED, [RUNNING], [lock], lambda c: CONNECTED, 0.0)
    assert why == "production (every service) is locked by alice: freeze"
    other = lock_pb2.Lock(environment="production", service="api", holder="bob", reason="x")
    assert "locked" not in why_waiting(QUEUED, [RUNNING], [other], lambda c: CONNECTED, 0.0)


def test_then_a_deployment_in_flight_on_its_target() -> None:
    why = why_waiting(QUEUED, [ELSEWHERE, RUNNING], [], lambda c: CONNECTED, 0.0)
    assert why.startswith("deployment dep_r of the same target is IN_PROGRESS")
    assert why_waiting(QUEUED, [ELSEWHERE], [], lambda c: CONNECTED, 0.0) == (
        "next for the agents of cluster c1"
    )


def test_then_no_agent_connected() -> None:
    why = why_waiting(QUEUED, [], [], lambda c: [], 0.0)
    assert "no agent of cluster c1 has ever connected" in why


def test_under_fifo_an_older_queued_deployment_of_the_target_goes_first() -> None:
    older = deployment_pb2.Deployment(id="dep_o", service="web", environment="production")
    other = deployment_pb2.Deployment(id="dep_x", service="api", environment="production")
    why = why_waiting(QUEUED, [], [], lambda c: CONNECTED, 0.0, [older, other])
    assert why == (
        "deployment dep_o of the same target, queued before it: they run in order (queue: fifo)"
    )
    assert why_waiting(QUEUED, [], [], lambda c: CONNECTED, 0.0, [other]).startswith("next for")

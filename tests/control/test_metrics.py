"""The control plane's Prometheus metrics, scraped over HTTP from live in-process servers:
RPCs by method and code (refusals included), deployments by state, durations, queue depth,
connected agents; each server with a registry of its own."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sami.v1 import agent_pb2, deployment_pb2, status_pb2, status_pb2_grpc
from sami_control.metrics import ControlMetrics
from tests.security.conftest import (
    AgentStream,
    Server,
    Stubs,
    create,
    live_service,
    md,
    seed,
    start_server,
    stop_server,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(srv: Server) -> Samples:
    port = srv.server.http.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[], Server]]:
    started: list[Server] = []

    def start() -> Server:
        srv = start_server(tmp_path / f"data{len(started)}", metrics_listen="127.0.0.1:0")
        started.append(srv)
        return srv

    yield start
    for srv in started:
        stop_server(srv)


def test_rpcs_are_counted_by_method_and_code_refusals_included(
    serve: Callable[[], Server],
) -> None:
    srv = serve()
    admin = srv.token("admin", "root")
    s = Stubs(srv.channel())
    s.dep.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
    s.dep.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
    with pytest.raises(grpc.RpcError):
        s.dep.ListDeployments(deployment_pb2.ListDeploymentsRequest())  # no token
    with pytest.raises(grpc.RpcError):
        s.dep.GetDeployment(deployment_pb2.GetDeploymentRequest(name="dep_x"), metadata=md(admin))
    # A method nobody defined: one label value for all of them, whatever the caller sends.
    ch = srv.channel()
    for name in ("/made.Up/One", "/sami.v1.DeploymentService/Nope"):
        with pytest.raises(grpc.RpcError):
            ch.unary_unary(name)(b"", metadata=md(admin), timeout=5)
    with pytest.raises(grpc.RpcError):
        ch.unary_unary("/another.Made/Up")(b"", timeout=5)
    # A request that does not parse.
    with pytest.raises(grpc.RpcError):
        ch.unary_unary("/sami.v1.DeploymentService/GetDeployment")(
            b"\xff\xff\xff", metadata=md(admin), timeout=5
        )

    m = scrape(srv)
    dep = {"grpc_service": "sami.v1.DeploymentService"}
    handled = "sami_grpc_server_handled_total"
    assert value(m, handled, **dep, grpc_method="ListDeployments", grpc_code="OK") == 2
    assert value(m, handled, **dep, grpc_method="ListDeployments", grpc_code="UNAUTHENTICATED") == 1
    assert value(m, handled, **dep, grpc_method="GetDeployment", grpc_code="NOT_FOUND") == 1
    assert value(m, handled, **dep, grpc_method="GetDeployment", grpc_code="INVALID_ARGUMENT") == 1
    unknown = {"grpc_service": "unknown", "grpc_method": "unknown"}
    assert value(m, handled, **unknown, grpc_code="UNIMPLEMENTED") == 2
    assert value(m, handled, **unknown, grpc_code="UNAUTHENTICATED") == 1
    assert not [k for k in m if dict(k[1]).get("grpc_method") in ("One", "Nope", "Up")]
    timed = "sami_grpc_server_handling_seconds_count"
    assert value(m, timed, **dep, grpc_method="ListDeployments") == 3


def test_deployments_queue_agents_and_durations(serve: Callable[[], Server]) -> None:
    srv = serve()
    admin = srv.token("admin", "root")
    s, art = seed(srv, admin)  # cluster c1: stage, production, pull_request
    first = create(s, admin, art)
    create(s, admin, art, env="production")
    m = scrape(srv)
    assert value(m, "sami_queue_depth", cluster="c1") == 2
    assert value(m, "sami_deployments", state="QUEUED", environment="stage") == 1
    assert value(m, "sami_deployments", state="QUEUED", environment="production") == 1
    assert value(m, "sami_agents_connected", cluster="c1") == 0
    t = "sami_deployment_transitions_total"
    assert value(m, t, state="QUEUED", environment="stage") == 1

    agent = srv.token("agent", "agent-1", cluster="c1")
    stream = AgentStream(s, agent, "a1")
    try:
        assert stream.welcomed.wait(10)
        _until(lambda: len(_assignments(stream)) == 2)
        leases = _assignments(stream)
        by_id = {lease.deployment.id: lease for lease in leases}
        for lease in leases:
            stream.send(
                ack=agent_pb2.Ack(
                    deployment_id=lease.deployment.id,
                    lease_id=lease.lease_id,
                    epoch=lease.deployment.epoch,
                )
            )
        m = scrape(srv)
        assert value(m, "sami_agents_connected", cluster="c1") == 1
        assert value(m, "sami_queue_depth", cluster="c1") == 0
        _until(
            lambda: (
                value(scrape(srv), "sami_deployments", state="IN_PROGRESS", environment="stage")
                == 1
            )
        )
        lease = by_id[first]
        stream.send(
            result=agent_pb2.Result(
                deployment_id=first,
                lease_id=lease.lease_id,
                epoch=lease.deployment.epoch,
                outcome=agent_pb2.OUTCOME_SUCCEEDED,
            )
        )
        stream.wait_for("done")
    finally:
        stream.close()
    m = scrape(srv)
    for state in ("QUEUED", "ASSIGNED", "IN_PROGRESS", "SUCCEEDED"):
        assert value(m, t, state=state, environment="stage") == 1, state
    assert value(m, t, state="IN_PROGRESS", environment="production") == 1
    assert value(m, "sami_deployments", state="IN_PROGRESS", environment="stage") == 0
    assert value(m, "sami_deployments", state="IN_PROGRESS", environment="production") == 1
    wait = "sami_deployment_queue_wait_seconds_count"
    assert value(m, wait, environment="stage") == 1
    assert value(m, wait, environment="production") == 1
    rollout = "sami_deployment_rollout_seconds_count"
    assert value(m, rollout, environment="stage", state="SUCCEEDED") == 1
    assert (
        value(m, "sami_deployment_rollout_seconds_sum", environment="stage", state="SUCCEEDED") < 30
    )
    _until(lambda: value(scrape(srv), "sami_agents_connected", cluster="c1") == 0)


def _assignments(stream: AgentStream) -> list[agent_pb2.Assignment]:
    return [m.assignment for m in list(stream.received) if m.WhichOneof("msg") == "assignment"]


def _until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_server_has_its_own_registry(serve: Callable[[], Server]) -> None:
    one, two = serve(), serve()
    token = one.token("admin", "root")
    Stubs(one.channel()).dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(), metadata=md(token)
    )
    labels = {
        "grpc_service": "sami.v1.DeploymentService",
        "grpc_method": "ListDeployments",
        "grpc_code": "OK",
    }
    assert value(scrape(one), "sami_grpc_server_handled_total", **labels) == 1
    assert value(scrape(two), "sami_grpc_server_handled_total", **labels) == 0
    assert ControlMetrics().registry is not ControlMetrics().registry


def test_process_metrics_and_only_get(serve: Callable[[], Server]) -> None:
    srv = serve()
    m = scrape(srv)
    assert value(m, "process_resident_memory_bytes") > 0
    port = srv.server.http.metrics_port
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 405


def test_drifted_services_over_the_agent_stream(serve: Callable[[], Server]) -> None:
    """An agent's LiveStatus report over gRPC: a service running another digest than Sami
    deployed is counted as drifted and shown by GetStatus with its reason."""
    srv = serve()
    admin = srv.token("admin", "root")
    s, art = seed(srv, admin)
    first = create(s, admin, art)
    agent = srv.token("agent", "agent-1", cluster="c1")
    stream = AgentStream(s, agent, "a1")
    try:
        assert stream.welcomed.wait(10)
        lease = stream.succeed(first)
        digest = "sha256:" + "a" * 64
        service = live_service(lease, digest, replicas=1)
        stream.send(live_status=agent_pb2.LiveStatus(full=True, services=[service]))
        _until(lambda: value(scrape(srv), "sami_drifted_services", environment="stage") == 0)
        service.image = "web@sha256:" + "c" * 64
        stream.send(live_status=agent_pb2.LiveStatus(full=False, services=[service]))
        _until(lambda: value(scrape(srv), "sami_drifted_services", environment="stage") == 1)
        status = status_pb2_grpc.StatusServiceStub(srv.channel())
        (row,) = status.GetStatus(status_pb2.GetStatusRequest(), metadata=md(admin)).services
        assert row.drifted and row.drift_reason.startswith("image: runs sha256:cccccccccccc")
        assert (row.service, row.environment, row.running_digest) == (
            "web",
            "stage",
            "sha256:" + "c" * 64,
        )
    finally:
        stream.close()

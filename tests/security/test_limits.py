"""Limits: what a caller without a token can make the server do (nothing parsed, nothing
stored), message and metadata sizes, malformed bodies."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sami.v1 import admin_pb2, deployment_pb2, manifest_pb2
from sami_control.server import MAX_MESSAGE_BYTES
from tests.security.conftest import Server, Stubs, md, seed
from tests.security.dbdump import logical_dump

METHODS = [
    "/sami.v1.DeploymentService/CreateDeployment",
    "/sami.v1.ArtifactService/RegisterArtifact",
    "/sami.v1.ManifestService/SyncManifests",
    "/sami.v1.DeploymentService/WatchDeployment",
    "/sami.v1.AgentService/Connect",
    "/sami.v1.TokenService/CreateToken",
    "/sami.v1.NoSuchService/Nothing",
]
GARBAGE = b"\xff\xff\xff\xff\x0f\x08\x96\x01" * 8


def raw(ch: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return ch.unary_unary(method, request_serializer=None, response_deserializer=None)


def healthy(srv: Server) -> bool:
    with grpc.insecure_channel(srv.addr) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return r.status == health_pb2.HealthCheckResponse.SERVING


def audit_count(s: Stubs, admin: str) -> int:
    return len(
        s.audit.ListAudit(admin_pb2.ListAuditRequest(page_size=500), metadata=md(admin)).entries
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "token", [None, "garbage", "sami_000000000000_" + "x" * 43], ids=["none", "bad", "forged"]
)
def test_garbage_without_a_valid_token_is_unauthenticated(
    serve: Callable[..., Server], method: str, token: str | None
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    before, audited = logical_dump(srv.data), audit_count(s, admin)
    ch = srv.channel()
    with pytest.raises(grpc.RpcError) as ei:
        raw(ch, method)(GARBAGE, metadata=md(token), timeout=5)
    # Not INVALID_ARGUMENT or INTERNAL: the body was never parsed.
    assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert logical_dump(srv.data) == before
    assert audit_count(s, admin) == audited  # not even an audit row
    assert healthy(srv)


def test_garbage_with_a_valid_token_is_invalid_argument(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    _s, _ = seed(srv, admin)
    agent = srv.token("agent", cluster="c1")
    before = logical_dump(srv.data)
    ch = srv.channel()
    for method in [*METHODS[:3], METHODS[5]]:
        with pytest.raises(grpc.RpcError) as ei:
            raw(ch, method)(GARBAGE, metadata=md(admin), timeout=5)
        assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method
    # Streams too: a watch, and an agent stream whose Hello does not parse.
    watch = ch.unary_stream(METHODS[3], request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as ei:
        list(watch(GARBAGE, metadata=md(admin), timeout=5))
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    connect = ch.stream_stream(METHODS[4], request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as ei:
        list(connect(iter([GARBAGE]), metadata=md(agent), timeout=5))
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert logical_dump(srv.data) == before
    assert healthy(srv)


def test_an_unauthenticated_caller_gets_nothing_read(serve: Callable[..., Server]) -> None:
    """A 15 MiB body without a token is refused at once: the refusal does not wait for the
    body, and the server neither parses nor stores anything."""
    srv = serve()
    admin = srv.token("admin")
    _s, _ = seed(srv, admin)
    before = logical_dump(srv.data)
    ch = srv.channel()
    body = manifest_pb2.SyncManifestsRequest(
        files=[manifest_pb2.ManifestFile(path="services/x", content=b"y" * (15 * 1024 * 1024))]
    ).SerializeToString()
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as ei:
            raw(ch, METHODS[2])(body, timeout=10)
        assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - t0 < 10
    assert logical_dump(srv.data) == before
    assert healthy(srv)


def test_messages_over_the_limit_are_refused(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    seed(srv, admin)
    before = logical_dump(srv.data)
    ch = srv.channel()
    body = b"\x0a" + b"\x00" * (MAX_MESSAGE_BYTES + 1024)  # over the limit
    with pytest.raises(grpc.RpcError) as ei:
        raw(ch, METHODS[2])(body, metadata=md(admin), timeout=20)
    assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert logical_dump(srv.data) == before
    assert healthy(srv)


def test_oversized_metadata_is_refused_before_any_handler(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    before, audited = logical_dump(srv.data), audit_count(s, admin)
    ch = srv.channel()
    stub = Stubs(ch)
    with pytest.raises(grpc.RpcError) as ei:
        stub.dep.CreateDeployment(
            deployment_pb2.CreateDeploymentRequest(
                service="web", environment="stage", artifact=art
            ),
            metadata=(*md(admin), ("x-padding", "p" * 40_000)),
            timeout=5,
        )
    assert ei.value.code() is not grpc.StatusCode.OK
    # An authorization header over 256 characters is not even looked up.
    with pytest.raises(grpc.RpcError) as ei:
        stub.dep.ListDeployments(
            deployment_pb2.ListDeploymentsRequest(), metadata=md("x" * 5000), timeout=5
        )
    assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert logical_dump(srv.data) == before
    assert audit_count(s, admin) == audited
    assert healthy(srv)
    # The server goes on serving the same connection.
    assert stub.dep.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))


def test_the_stack_policy_flag_is_checked_and_kept(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sami_control import cli as control_cli
    from sami_control.server import ControlServer, ListenRefused, ServeConfig

    srv = serve(stack_policy="strict")
    assert srv.server.core.settings.stack_policy == "strict"
    with pytest.raises(ListenRefused, match=r"unknown stack policy 'lax'.*off or strict"):
        ControlServer(ServeConfig(data_dir=srv.data.parent / "other", stack_policy="lax"))
    args = control_cli._parser().parse_args(["serve", "--stack-policy", "strict"])
    assert args.stack_policy == "strict"
    assert control_cli._parser().parse_args(["serve"]).stack_policy == "off"
    monkeypatch.setenv("SAMI_STACK_POLICY", "strict")
    assert control_cli._parser().parse_args(["serve"]).stack_policy == "strict"

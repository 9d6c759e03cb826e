"""Every list RPC answers a page token it did not issue with INVALID_ARGUMENT naming
page_token, never INTERNAL (a 70-digit position once reached SQLite and came back INTERNAL)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from sami.v1 import (
    admin_pb2,
    artifact_pb2,
    cron_pb2,
    cron_pb2_grpc,
    deployment_pb2,
    manifest_pb2,
)
from sami_control.core.paging import page_token
from tests.security.conftest import Server, Stubs, md, seed, violations


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


BAD_TOKENS = {
    "70-digit": b64("v1:" + "9" * 70),
    "2^63": b64(f"v1:{2**63}"),
    "negative": b64("v1:-5"),
    "plus": b64("v1:+5"),
    "space": b64("v1: 5"),
    "underscore": b64("v1:1_000"),
    "arabic-digits": b64("v1:\u0665"),
    "empty-position": b64("v1:"),
    "other-version": b64("v2:5"),
    "two-colons": b64("v1:5:6"),
    "not-utf8": base64.urlsafe_b64encode(b"v1:\xff").decode(),
    "not-base64": "garbage!",
    "non-ascii": "dj\u00e9E6NQ==",
    "too-long": b64("v1:1") + "A" * 100,
}

ListCall = Callable[[Stubs, Any, str, Any], Any]
LISTS: dict[str, ListCall] = {
    "ListDeployments": lambda s, cron, tok, m: s.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(page_token=tok), metadata=m
    ),
    "ListArtifacts": lambda s, cron, tok, m: s.art.ListArtifacts(
        artifact_pb2.ListArtifactsRequest(page_token=tok), metadata=m
    ),
    "ListManifestRevisions": lambda s, cron, tok, m: s.man.ListManifestRevisions(
        manifest_pb2.ListManifestRevisionsRequest(page_token=tok), metadata=m
    ),
    "ListAudit": lambda s, cron, tok, m: s.audit.ListAudit(
        admin_pb2.ListAuditRequest(page_token=tok), metadata=m
    ),
    "ListCronRuns": lambda s, cron, tok, m: cron.ListCronRuns(
        cron_pb2.ListCronRunsRequest(page_token=tok), metadata=m
    ),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.security.conftest import start_server, stop_server

    srv: Server = start_server(tmp_path_factory.mktemp("pages") / "data")
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    cron = cron_pb2_grpc.CronServiceStub(srv.channel())
    yield s, cron, admin
    stop_server(srv)


@pytest.mark.parametrize("rpc", LISTS)
@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_page_token_is_invalid_argument(world: Any, rpc: str, token: str) -> None:
    s, cron, admin = world
    with pytest.raises(grpc.RpcError) as ei:
        LISTS[rpc](s, cron, token, md(admin))
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()
    assert violations(ei.value) == ["page_token"]


@pytest.mark.parametrize("rpc", LISTS)
def test_a_token_the_server_issues_is_accepted(world: Any, rpc: str) -> None:
    s, cron, admin = world
    LISTS[rpc](s, cron, page_token(2**62), md(admin))
    LISTS[rpc](s, cron, page_token(0), md(admin))

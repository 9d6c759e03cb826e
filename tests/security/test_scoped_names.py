"""Idempotency keys and artifact names are not first come, first served across tokens: one
caller cannot claim what another will use. Over the API."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from sami.v1 import artifact_pb2, deployment_pb2
from tests.security.conftest import REF, Server, create, md, seed


def test_a_request_id_is_the_callers_own(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    previews = srv.token("deployer", "ci-previews", services=["web"], environments=["pull_request"])

    # A token for previews uses (or pre-claims) the key an admin's release will use.
    preview = create(s, previews, art, "pull_request", pull_request=7, request_id="release-1")
    release = create(s, admin, art, "production", request_id="release-1")
    assert release != preview
    got = s.dep.GetDeployment(deployment_pb2.GetDeploymentRequest(name=release), metadata=md(admin))
    assert (got.environment, got.request_id) == ("production", "release-1")

    # Retries by the same token still find their own deployment.
    assert create(s, admin, art, "production", request_id="release-1") == release
    assert (
        create(s, previews, art, "pull_request", pull_request=7, request_id="release-1") == preview
    )
    # And a token reusing its own key for another request is still refused.
    with pytest.raises(grpc.RpcError) as err:
        create(s, admin, art, "stage", request_id="release-1")
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS


def _register(s: object, token: str, name: str) -> artifact_pb2.RegisterArtifactResponse:
    req = artifact_pb2.RegisterArtifactRequest(
        artifact=artifact_pb2.Artifact(artifact_name=name, ref=REF)
    )
    return s.art.RegisterArtifact(req, metadata=md(token))  # type: ignore[attr-defined,no-any-return]


def test_a_scoped_deployer_registers_artifacts_of_its_services_only(
    serve: Callable[..., Server],
) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    web_ci = srv.token("deployer", "ci-web", services=["web"])
    assert _register(s, web_ci, "web").artifact.artifact_name == "web"
    assert _register(s, web_ci, "web/assets").created
    for name in ("api", "webapp", "api/web"):
        with pytest.raises(grpc.RpcError) as err:
            _register(s, web_ci, name)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED, name
        assert "only under the names of its services (web or web/…)" in (err.value.details() or "")
    # Tokens not scoped to services register any name.
    assert _register(s, admin, "api").created
    assert _register(s, srv.token("deployer", "ci-all"), "worker").created

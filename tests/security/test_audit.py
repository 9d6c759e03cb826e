"""The audit log: every mutation, and every refused one, with who, what, when, the request id
and the peer address; ListAudit pages through it, filtered by time and service."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import timestamp_pb2

from sami.v1 import admin_pb2, artifact_pb2, cluster_pb2, deployment_pb2
from tests.security.conftest import REF, Server, Stubs, create, md, seed, sync_request


def audit(s: Stubs, admin: str, **kw: object) -> list[admin_pb2.AuditEntry]:
    out: list[admin_pb2.AuditEntry] = []
    req = admin_pb2.ListAuditRequest(**kw)  # type: ignore[arg-type]
    while True:
        page = s.audit.ListAudit(req, metadata=md(admin))
        out += page.entries
        if not page.next_page_token:
            return out
        req.page_token = page.next_page_token


def refused(fn: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code()


def test_every_mutation_and_refusal_is_recorded(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin", "root")
    s, art = seed(srv, admin)  # cluster c1 (offline), manifests sync, artifact register
    ci = srv.token("deployer", "ci-web", services=["web"], environments=["stage"])
    dep = create(s, ci, art, request_id="ci-run-1")
    dep2 = s.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="api", environment="stage", artifact=art, reason="hotfix"
        ),
        metadata=md(admin, x_request_id="trace-42"),
    ).id
    s.dep.CancelDeployment(deployment_pb2.CancelDeploymentRequest(name=dep2), metadata=md(admin))
    pr = create(s, admin, art, env="pull_request", pull_request=7)
    teardown = s.dep.TeardownPreview(
        deployment_pb2.TeardownPreviewRequest(service="web", pull_request=7), metadata=md(admin)
    ).id
    made = s.tok.CreateToken(
        admin_pb2.CreateTokenRequest(role=admin_pb2.TOKEN_ROLE_READER, display_name="board"),
        metadata=md(admin),
    )
    s.tok.RevokeToken(admin_pb2.RevokeTokenRequest(name=made.token.id), metadata=md(admin))
    # Refusals: out of scope, bad input, a reused request id, an unknown deployment.
    assert refused(lambda: create(s, ci, art, env="production")) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        refused(
            lambda: s.dep.CreateDeployment(
                deployment_pb2.CreateDeploymentRequest(
                    service="Web", environment="stage", artifact=art
                ),
                metadata=md(ci, x_request_id="trace-43"),
            )
        )
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert refused(lambda: create(s, ci, art, request_id="ci-run-1", reason="other")) is (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        refused(
            lambda: s.dep.CancelDeployment(
                deployment_pb2.CancelDeploymentRequest(name="dep_nope"), metadata=md(admin)
            )
        )
        is grpc.StatusCode.NOT_FOUND
    )
    assert (
        refused(
            lambda: s.clu.CreateCluster(
                cluster_pb2.CreateClusterRequest(cluster_id="c9", environments=["stage"]),
                metadata=md(ci),
            )
        )
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # Unauthenticated calls are not recorded (they would let anyone write to the database).
    before = len(audit(s, admin))
    for _ in range(3):
        assert refused(lambda: create(s, "sami_000000000000_" + "x" * 43, art)) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
    entries = audit(s, admin)
    assert len(entries) == before

    seen = {(e.action, e.outcome) for e in entries}
    for want in [
        ("cluster.create", "ok"),
        ("manifests.sync", "ok"),
        ("artifact.register", "ok"),
        ("deployment.create", "ok"),
        ("deployment.cancel", "ok"),
        ("preview.teardown", "ok"),
        ("token.create", "ok"),
        ("token.revoke", "ok"),
        ("deployment.create", "PERMISSION_DENIED"),
        ("deployment.create", "INVALID_ARGUMENT"),
        ("deployment.create", "ALREADY_EXISTS"),
        ("deployment.cancel", "NOT_FOUND"),
        ("cluster.create", "PERMISSION_DENIED"),
    ]:
        assert want in seen, want

    by_target = {(e.action, e.target): e for e in entries}
    created = by_target[("deployment.create", dep)]
    assert (created.token_name, created.request_id, created.service) == (
        "ci-web",
        "ci-run-1",
        "web",
    )
    assert created.token_id and created.peer.startswith("ipv4:127.0.0.1:")
    assert by_target[("deployment.create", dep2)].request_id == "trace-42"
    assert by_target[("deployment.cancel", dep2)].token_name == "root"
    assert ("preview.teardown", teardown) in by_target and pr
    assert by_target[("token.revoke", made.token.id)].detail == "name=board"
    bad = next(e for e in entries if e.outcome == "INVALID_ARGUMENT")
    assert bad.request_id == "trace-43" and bad.token_name == "ci-web"
    assert "service" in bad.detail
    assert bad.peer.startswith("ipv4:127.0.0.1:")
    # The offline cluster creation is attributed to the offline admin.
    assert by_target[("cluster.create", "c1")].token_name == "offline-admin"
    # Sequences increase; times do not go back.
    seqs = [e.sequence for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_list_audit_filters_and_pages(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    for i in range(3):
        create(s, admin, art, request_id=f"r{i}")
    s.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(service="api", environment="stage", artifact=art),
        metadata=md(admin),
    )
    everything = audit(s, admin)
    paged = audit(s, admin, page_size=2)
    assert [e.sequence for e in paged] == [e.sequence for e in everything]
    web = audit(s, admin, service="web")
    assert len(web) == 3 and {e.service for e in web} == {"web"}
    assert [e.service for e in audit(s, admin, service="api")] == ["api"]
    # since: only what happened from then on.
    time.sleep(0.05)
    cut = timestamp_pb2.Timestamp()
    cut.GetCurrentTime()
    time.sleep(0.05)
    s.art.RegisterArtifact(
        artifact_pb2.RegisterArtifactRequest(
            artifact=artifact_pb2.Artifact(artifact_name="api", ref=REF)
        ),
        metadata=md(admin),
    )
    later = audit(s, admin, since=cut)
    assert [e.action for e in later] == ["artifact.register"]
    for bad in (
        admin_pb2.ListAuditRequest(service="Web"),
        admin_pb2.ListAuditRequest(page_token="garbage"),
        admin_pb2.ListAuditRequest(page_size=-1),
        admin_pb2.ListAuditRequest(since=timestamp_pb2.Timestamp(seconds=-10)),
    ):
        assert refused(lambda bad=bad: s.audit.ListAudit(bad, metadata=md(admin))) is (
            grpc.StatusCode.INVALID_ARGUMENT
        )


def test_a_refused_sync_is_recorded_and_changes_nothing(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s = Stubs(srv.channel())
    scoped = srv.token("deployer", services=["web"])
    assert refused(lambda: s.man.SyncManifests(sync_request(), metadata=md(scoped))) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    bad = sync_request()
    bad.files[0].path = "../escape"
    assert refused(lambda: s.man.SyncManifests(bad, metadata=md(admin))) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    entries = [e for e in audit(s, admin) if e.action == "manifests.sync"]
    assert [e.outcome for e in entries] == ["PERMISSION_DENIED", "INVALID_ARGUMENT"]
    assert "../escape" in entries[1].detail

"""The bad-input corpus: each case is one RPC (or one agent message) with one bad input.

For every case: the expected status code (with INVALID_ARGUMENT, a google.rpc.BadRequest
naming the field), the server still serving afterwards, and the database unchanged: a logical
dump of every table (but the audit log, which records refusals) taken before and after is
the same. The cases share one server, set up once, so they also show that a long series of
bad requests leaves the server as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sami.v1 import (
    admin_pb2,
    agent_pb2,
    artifact_pb2,
    cluster_pb2,
    deployment_pb2,
    manifest_pb2,
)
from sami_control import offline
from sami_control.core.settings import Settings
from tests import samples
from tests.security.conftest import (
    REF,
    AgentStream,
    Server,
    Stubs,
    md,
    start_server,
    stop_server,
    sync_request,
    violations,
)
from tests.security.dbdump import logical_dump

HEX = "a" * 64
DIGEST = "sha256:" + HEX
MANIFEST = "services/web/swarm/stage/sami.yaml"


@dataclass
class Outcome:
    code: str
    fields: list[str] = field(default_factory=list)


@dataclass
class World:
    srv: Server
    s: Stubs
    tokens: dict[str, str]
    art: str
    dep: str  # web/stage, IN_PROGRESS on agent a1 (request_id ci-1)
    lease: agent_pb2.Assignment
    done: str  # web/pull_request #3, SUCCEEDED by agent a1
    done_lease: agent_pb2.Assignment
    a1: AgentStream  # agent of cluster c1, holds `dep`
    b1: AgentStream  # agent of cluster c2

    @property
    def epoch(self) -> int:
        """The fencing epoch of `lease`."""
        return self.lease.deployment.epoch

    def rpc(self, fn: Callable[[Stubs, Any], object], token: str = "admin") -> Outcome:
        tok = self.tokens.get(token, token)
        try:
            result = fn(self.s, md(tok))
            if isinstance(result, Iterator):
                list(result)
        except grpc.RpcError as err:
            return Outcome(err.code().name, violations(err))
        return Outcome("OK")

    def report(self, stream: AgentStream, **msg: Any) -> Outcome:
        """Send one report; the outcome is the stream's reply (REVOKE, DONE), IGNORED when
        the server answered nothing (checked with a barrier report), or the code the stream
        ended with."""
        start = len(stream.received)
        stream.send(**msg)
        barrier = f"dep_barrier{time.monotonic_ns()}"
        stream.send(ack=agent_pb2.Ack(deployment_id=barrier, lease_id="lease_x", epoch=1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = stream.received[start:]
            if stream.done.is_set():
                return Outcome(stream.code.name if stream.code else "?", stream.fields)
            for m in got:
                kind = m.WhichOneof("msg")
                if kind == "revoke" and m.revoke.deployment_id == barrier:
                    others = [x for x in got if x is not m]
                    if not others:
                        return Outcome("IGNORED")
                    return Outcome(others[0].WhichOneof("msg").upper())
            time.sleep(0.01)
        raise AssertionError("no answer from the server")

    def connect(self, token: str, agent_id: str = "x1", first: Any = None) -> Outcome:
        stream = AgentStream(self.s, self.tokens.get(token, token), agent_id, first)
        stream.done.wait(10)
        stream.close()
        if stream.welcomed.is_set():
            return Outcome("OK")
        return Outcome(stream.code.name if stream.code else "?", stream.fields)

    def raw(self, method: str, body: bytes, token: str = "admin") -> Outcome:
        call = self.s.raw.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(body, metadata=md(self.tokens[token]), timeout=30)
        except grpc.RpcError as err:
            return Outcome(err.code().name, violations(err))
        return Outcome("OK")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("corpus") / "data"
    # Leases that outlive the module: nothing changes in the background between two dumps.
    srv = start_server(data, Settings(ack_timeout=3600, lease_ttl=3600, heartbeat_interval=3600))
    try:
        offline.add_cluster(data, "c1", ["stage", "pull_request"])
        offline.add_cluster(data, "c2", ["production"])
        admin = srv.token("admin", "root")
        revoked = offline.add_token(data, "admin", "gone")
        offline.revoke_token(data, revoked.record.id)
        expired = offline.add_token(data, "admin", "old", expires_in="1")
        tokens = {
            "admin": admin,
            "ci": srv.token("deployer", "ci-web", services=["web"], environments=["stage"]),
            "reader": srv.token("reader"),
            "agent1": srv.token("agent", "agent-c1", cluster="c1"),
            "agent2": srv.token("agent", "agent-c2", cluster="c2"),
            "revoked": revoked.plaintext,
            "expired": expired.plaintext,
            "forged": "sami_0123456789ab_" + "x" * 43,
            "malformed": "sami_notatoken",
        }
        ch = srv.channel()
        s = Stubs(ch)
        s.raw = ch  # type: ignore[attr-defined]
        s.man.SyncManifests(sync_request(), metadata=md(admin))
        art = s.art.RegisterArtifact(
            artifact_pb2.RegisterArtifactRequest(
                artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
            ),
            metadata=md(admin),
        ).artifact.id
        a1 = AgentStream(s, tokens["agent1"], "a1")
        b1 = AgentStream(s, tokens["agent2"], "b1")
        assert a1.welcomed.wait(10) and b1.welcomed.wait(10)

        def deploy(env: str, **kw: Any) -> tuple[str, agent_pb2.Assignment]:
            n = len(a1.received)
            d = s.dep.CreateDeployment(
                deployment_pb2.CreateDeploymentRequest(
                    service="web", environment=env, artifact=art, **kw
                ),
                metadata=md(admin),
            ).id
            lease = a1.wait_for("assignment", after=n).assignment
            assert lease.deployment.id == d
            a1.send(
                ack=agent_pb2.Ack(
                    deployment_id=d, lease_id=lease.lease_id, epoch=lease.deployment.epoch
                )
            )
            return d, lease

        dep, lease = deploy("stage", request_id="ci-1")
        done, done_lease = deploy("pull_request", pull_request=3)
        n = len(a1.received)
        a1.send(
            result=agent_pb2.Result(
                deployment_id=done,
                lease_id=done_lease.lease_id,
                epoch=done_lease.deployment.epoch,
                outcome=agent_pb2.OUTCOME_SUCCEEDED,
            )
        )
        a1.wait_for("done", after=n)
        time.sleep(max(0.0, 1.1 - (time.time() - expired.record.created_at)))
        yield World(srv, s, tokens, art, dep, lease, done, done_lease, a1, b1)
    finally:
        stop_server(srv)


# Request builders ----------------------------------------------------------------------


def deploy(token: str = "admin", **over: Any) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        kw: dict[str, Any] = {"service": "web", "environment": "stage", "artifact": w.art}
        kw.update(over)
        req = deployment_pb2.CreateDeploymentRequest(**kw)
        return w.rpc(lambda s, m: s.dep.CreateDeployment(req, metadata=m), token)

    return run


def register(token: str = "admin", **over: Any) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        kw: dict[str, Any] = {"artifact_name": "web2", "ref": f"reg.example/web2@{DIGEST}"}
        prov = {k: over.pop(k) for k in ("git_repo", "git_commit", "ci_run_url") if k in over}
        kw.update(over)
        art = artifact_pb2.Artifact(**kw, provenance=artifact_pb2.Provenance(**prov))
        req = artifact_pb2.RegisterArtifactRequest(artifact=art)
        return w.rpc(lambda s, m: s.art.RegisterArtifact(req, metadata=m), token)

    return run


def sync(
    change: Callable[[dict[str, bytes]], None], token: str = "admin", commit: str = ""
) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        files = samples.repo()
        change(files)
        req = manifest_pb2.SyncManifestsRequest(
            commit=commit,
            files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()],
        )
        return w.rpc(lambda s, m: s.man.SyncManifests(req, metadata=m), token)

    return run


def sync_files(files: list[tuple[str, bytes]]) -> Callable[[World], Outcome]:
    req = manifest_pb2.SyncManifestsRequest(
        files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files]
    )
    return lambda w: w.rpc(lambda s, m: s.man.SyncManifests(req, metadata=m))


def put(path: str, data: bytes) -> Callable[[dict[str, bytes]], None]:
    return lambda files: files.__setitem__(path, data)


def rpc(
    fn: Callable[[Stubs, Any, World], object], token: str = "admin"
) -> Callable[[World], Outcome]:
    return lambda w: w.rpc(lambda s, m: fn(s, m, w), token)


def report(agent: str = "a1", **build: Callable[[World], Any]) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        stream = w.a1 if agent == "a1" else w.b1
        return w.report(stream, **{k: f(w) for k, f in build.items()})

    return run


BOMB = b"""version: v1beta
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
"""
DEEP = b"version: v1beta\nx: " + b"[" * 200 + b"]" * 200 + b"\n"
PYOBJ = b"version: v1beta\nservice_name: !!python/object/apply:os.system ['touch /tmp/pwned']\n"
MANIFEST_HOMOGLYPH = samples.MANIFEST.format(service="w\u0435b", extra="").encode()

IA = "INVALID_ARGUMENT"


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[World], Outcome]
    code: str
    field: str | None = None  # a violation's field must start with this

    def __repr__(self) -> str:
        return self.id


CASES = [
    # CreateDeployment: names
    Case("deploy-service-empty", deploy(service=""), IA, "service"),
    Case("deploy-service-too-long", deploy(service="a" * 64), IA, "service"),
    Case("deploy-service-upper-case", deploy(service="Web"), IA, "service"),
    Case("deploy-service-homoglyph", deploy(service="w\u0435b"), IA, "service"),
    Case("deploy-service-rtl-override", deploy(service="web\u202e"), IA, "service"),
    Case("deploy-service-zero-width", deploy(service="w\u200beb"), IA, "service"),
    Case("deploy-service-nul", deploy(service="web\x00"), IA, "service"),
    Case("deploy-service-dotdot", deploy(service="../web"), IA, "service"),
    Case("deploy-env-prod-alias", deploy(environment="prod"), IA, "environment"),
    Case("deploy-env-unknown", deploy(environment="qa"), IA, "environment"),
    Case("deploy-env-homoglyph", deploy(environment="st\u0430ge"), IA, "environment"),
    Case("deploy-pr-negative", deploy(environment="pull_request", pull_request=-1), IA,
         "pull_request"),
    Case("deploy-pr-on-stage", deploy(pull_request=5), IA, "pull_request"),
    Case("deploy-pr-too-large", deploy(environment="pull_request", pull_request=2**31 - 1), IA,
         "pull_request"),
    Case("deploy-reason-nul", deploy(reason="ok\x00"), IA, "reason"),
    Case("deploy-reason-too-long", deploy(reason="r" * 1001), IA, "reason"),
    Case("deploy-reason-bidi", deploy(reason="\u202egnp.exe"), IA, "reason"),
    *(
        Case(f"deploy-reason-u{ord(ch):04x}", deploy(reason=f"ok{ch}fine"), IA, "reason")
        for ch in "\u2028\u2029\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f"
    ),
    Case("deploy-request-id-space", deploy(request_id="a b"), IA, "request_id"),
    Case("deploy-request-id-too-long", deploy(request_id="r" * 200), IA, "request_id"),
    Case("deploy-type-unknown", deploy(deployment_type="../swarm"), IA, "deployment_type"),
    # CreateDeployment: artifact references
    Case("deploy-artifact-empty", deploy(artifact=""), IA, "artifact"),
    Case("deploy-digest-short", deploy(artifact="web@sha256:abc"), IA, "artifact"),
    Case("deploy-digest-upper-case", deploy(artifact="web@sha256:" + "A" * 64), IA, "artifact"),
    Case("deploy-digest-not-hex", deploy(artifact="web@sha256:" + "z" * 64), IA, "artifact"),
    Case("deploy-digest-sha512", deploy(artifact="web@sha512:" + "a" * 128), IA, "artifact"),
    Case("deploy-ref-not-pinned", deploy(artifact="127.0.0.1:5000/web:latest"), IA, "artifact"),
    Case("deploy-ref-too-long", deploy(artifact="w" * 600 + "@" + DIGEST), IA, "artifact"),
    Case("deploy-artifact-unknown", deploy(artifact="web@sha256:" + "b" * 64), "NOT_FOUND"),
    # CreateDeployment: idempotency, scopes, tokens
    Case("deploy-request-id-reused", deploy(request_id="ci-1", reason="another body"),
         "ALREADY_EXISTS"),
    Case("deploy-out-of-scope-env", deploy("ci", environment="pull_request", pull_request=4),
         "PERMISSION_DENIED"),
    Case("deploy-out-of-scope-service", deploy("ci", service="api"), "PERMISSION_DENIED"),
    Case("deploy-reader", deploy("reader"), "PERMISSION_DENIED"),
    Case("deploy-agent-token", deploy("agent1"), "PERMISSION_DENIED"),
    Case("deploy-forged-token", deploy("forged"), "UNAUTHENTICATED"),
    Case("deploy-expired-token", deploy("expired"), "UNAUTHENTICATED"),
    Case("deploy-revoked-token", deploy("revoked"), "UNAUTHENTICATED"),
    Case("deploy-malformed-token", deploy("malformed"), "UNAUTHENTICATED"),
    # RegisterArtifact
    Case("artifact-name-empty", register(artifact_name=""), IA, "artifact.artifact_name"),
    Case("artifact-name-upper-case", register(artifact_name="Web"), IA, "artifact.artifact_name"),
    Case("artifact-name-homoglyph", register(artifact_name="w\u0435b"), IA,
         "artifact.artifact_name"),
    Case("artifact-name-zero-width", register(artifact_name="w\u200deb"), IA,
         "artifact.artifact_name"),
    Case("artifact-name-too-long", register(artifact_name="a" * 201), IA,
         "artifact.artifact_name"),
    Case("artifact-name-dotdot", register(artifact_name="../etc"), IA, "artifact.artifact_name"),
    Case("artifact-ref-not-pinned", register(ref="reg.example/web2:latest"), IA, "artifact.ref"),
    Case("artifact-ref-too-long", register(ref="r/" + "w" * 600 + "@" + DIGEST), IA,
         "artifact.ref"),
    Case("artifact-ref-bad-tag", register(ref=f"reg.example/web2:-bad@{DIGEST}"), IA,
         "artifact.ref"),
    Case("artifact-ref-upper-case-repo", register(ref=f"reg.example/Web2@{DIGEST}"), IA,
         "artifact.ref"),
    Case("artifact-ref-nul", register(ref=f"reg.example/web2\x00@{DIGEST}"), IA, "artifact.ref"),
    Case("artifact-digest-short", register(digest="sha256:abc"), IA, "artifact.digest"),
    Case("artifact-digest-upper-case", register(digest="sha256:" + "A" * 64), IA,
         "artifact.digest"),
    Case("artifact-digest-not-hex", register(digest="sha256:" + "g" * 64), IA, "artifact.digest"),
    Case("artifact-digest-sha512", register(digest="sha512:" + "a" * 128), IA, "artifact.digest"),
    Case("artifact-digest-mismatch", register(digest="sha256:" + "b" * 64), IA,
         "artifact.digest"),
    Case("artifact-tag-invalid", register(tags=["bad tag"]), IA, "artifact.tags[0]"),
    Case("artifact-too-many-tags", register(tags=[f"t{i}" for i in range(51)]), IA,
         "artifact.tags"),
    Case("artifact-label-key", register(labels={"Bad Key": "v"}), IA, "artifact.labels"),
    Case("artifact-label-value-nul", register(labels={"team": "a\x00"}), IA, "artifact.labels"),
    Case("artifact-commit-short", register(git_commit="abc123"), IA,
         "artifact.provenance.git_commit"),
    Case("artifact-url-javascript", register(ci_run_url="javascript:alert(1)"), IA,
         "artifact.provenance.ci_run_url"),
    Case("artifact-git-repo-escape", register(git_repo="\x1b[2Jrepo"), IA,
         "artifact.provenance.git_repo"),
    Case("artifact-kind-unknown", register(kind=99), IA, "artifact.kind"),
    Case("artifact-static-no-digest",
         register(kind=artifact_pb2.ARTIFACT_KIND_STATIC_FILE, ref="https://x.example/a.tgz"),
         IA, "artifact.digest"),
    Case("artifact-static-url-credentials",
         register(kind=artifact_pb2.ARTIFACT_KIND_STATIC_FILE,
                  ref="https://ci:hunter2@files.example/site.tgz", digest=DIGEST),
         IA, "artifact.ref"),
    Case("artifact-ci-url-credentials",
         register(ci_run_url="https://bot:hunter2@ci.example/run/1"), IA,
         "artifact.provenance.ci_run_url"),
    Case("artifact-immutable", register(artifact_name="web", ref=f"other.example/web@{DIGEST}"),
         "ALREADY_EXISTS"),
    Case("artifact-reader", register("reader"), "PERMISSION_DENIED"),
    # SyncManifests
    Case("sync-path-dotdot", sync(put("../etc/passwd", b"x")), IA, "files[../etc/passwd]"),
    Case("sync-path-absolute", sync(put("/etc/passwd", b"x")), IA, "files[/etc/passwd]"),
    Case("sync-path-nul", sync(put("services/web/swarm/stage/a\x00b", b"x")), IA, "files["),
    Case("sync-path-backslash", sync(put("services\\web\\x", b"x")), IA, "files["),
    Case("sync-path-line-separator", sync(put("README\u2028.md", b"x")), IA, "files["),
    Case("sync-path-bidi", sync(put("services/web/swarm/stage/\u202egnp.yml", b"x")), IA,
         "files["),
    Case("sync-path-duplicate", sync_files([("README.md", b"a"), ("README.md", b"b")]), IA,
         "files[1].path"),
    Case("sync-no-files", sync_files([]), IA, "files"),
    Case("sync-commit-not-hex", sync(lambda f: None, commit="main"), IA, "commit"),
    Case("sync-yaml-bomb", sync(put(MANIFEST, BOMB)), IA, f"files[{MANIFEST}"),
    Case("sync-yaml-deep-nesting", sync(put(MANIFEST, DEEP)), IA, f"files[{MANIFEST}"),
    Case("sync-yaml-python-object", sync(put(MANIFEST, PYOBJ)), IA, f"files[{MANIFEST}"),
    Case("sync-yaml-not-utf8", sync(put(MANIFEST, b"\xff\xfe\x00v")), IA, f"files[{MANIFEST}"),
    Case("sync-yaml-homoglyph-service", sync(put(MANIFEST, MANIFEST_HOMOGLYPH)), IA,
         f"files[{MANIFEST}"),
    Case("sync-file-too-large",
         sync(put("services/web/swarm/stage/big.bin", b"0" * (4 * 1024 * 1024 + 1))), IA,
         "files[services/web/swarm/stage/big.bin]"),
    Case("sync-service-folder-homoglyph",
         sync(put("services/w\u0435b/swarm/stage/sami.yaml", b"version: v1beta\n")), IA,
         "files[services/w\u0435b/"),
    Case("sync-over-message-limit",
         lambda w: w.raw("/sami.v1.ManifestService/SyncManifests",
                         b"\x0a" + b"\x00" * (17 * 1024 * 1024)),
         "RESOURCE_EXHAUSTED"),
    Case("sync-scoped-deployer", sync(lambda f: None, token="ci"), "PERMISSION_DENIED"),
    # Clusters
    Case("cluster-id-upper-case", rpc(lambda s, m, w: s.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id="Prod", environments=["production"]),
        metadata=m)), IA, "cluster_id"),
    Case("cluster-no-environments", rpc(lambda s, m, w: s.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id="c3"), metadata=m)), IA, "environments"),
    Case("cluster-environment-unknown", rpc(lambda s, m, w: s.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id="c3", environments=["qa"]), metadata=m)),
         IA, "environments"),
    Case("cluster-environment-taken", rpc(lambda s, m, w: s.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id="c3", environments=["stage"]), metadata=m)),
         "FAILED_PRECONDITION"),
    Case("cluster-exists", rpc(lambda s, m, w: s.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id="c1", environments=["stage"]), metadata=m)),
         "ALREADY_EXISTS"),
    Case("cluster-update-name-nul", rpc(lambda s, m, w: s.clu.UpdateCluster(
        cluster_pb2.UpdateClusterRequest(name="c\x00", environments=["stage"]), metadata=m)),
         IA, "name"),
    Case("cluster-update-no-environments", rpc(lambda s, m, w: s.clu.UpdateCluster(
        cluster_pb2.UpdateClusterRequest(name="c1"), metadata=m)), IA, "environments"),
    Case("cluster-update-environment-unknown", rpc(lambda s, m, w: s.clu.UpdateCluster(
        cluster_pb2.UpdateClusterRequest(name="c1", environments=["qa"]), metadata=m)),
         IA, "environments"),
    Case("cluster-update-unknown", rpc(lambda s, m, w: s.clu.UpdateCluster(
        cluster_pb2.UpdateClusterRequest(name="c9", environments=["stage"]), metadata=m)),
         "NOT_FOUND"),
    # Cancel, teardown, lists, watch
    Case("cancel-name-nul", rpc(lambda s, m, w: s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name="dep_\x00"), metadata=m)), IA, "name"),
    Case("cancel-name-too-long", rpc(lambda s, m, w: s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name="d" * 101), metadata=m)), IA, "name"),
    Case("cancel-unknown", rpc(lambda s, m, w: s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name="dep_0000"), metadata=m)), "NOT_FOUND"),
    Case("cancel-terminal", rpc(lambda s, m, w: s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=w.done), metadata=m)),
         "FAILED_PRECONDITION"),
    Case("cancel-out-of-scope", rpc(lambda s, m, w: s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=w.done), metadata=m), "ci"),
         "PERMISSION_DENIED"),
    Case("approve-name-nul", rpc(lambda s, m, w: s.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name="dep_\x00"), metadata=m)), IA, "name"),
    Case("approve-comment-control", rpc(lambda s, m, w: s.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name=w.done, comment="ok\x1b[2J"), metadata=m)),
         IA, "comment"),
    Case("approve-unknown", rpc(lambda s, m, w: s.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name="dep_0000"), metadata=m)), "NOT_FOUND"),
    Case("approve-not-awaiting", rpc(lambda s, m, w: s.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name=w.done), metadata=m)),
         "FAILED_PRECONDITION"),
    Case("reject-no-reason", rpc(lambda s, m, w: s.dep.RejectDeployment(
        deployment_pb2.RejectDeploymentRequest(name=w.done), metadata=m)), IA, "reason"),
    Case("reject-name-too-long", rpc(lambda s, m, w: s.dep.RejectDeployment(
        deployment_pb2.RejectDeploymentRequest(name="d" * 101, reason="no"), metadata=m)),
         IA, "name"),
    Case("teardown-service-bad", rpc(lambda s, m, w: s.dep.TeardownPreview(
        deployment_pb2.TeardownPreviewRequest(service="../x", pull_request=3), metadata=m)),
         IA, "service"),
    Case("teardown-pr-zero", rpc(lambda s, m, w: s.dep.TeardownPreview(
        deployment_pb2.TeardownPreviewRequest(service="web"), metadata=m)), IA, "pull_request"),
    Case("list-page-token-garbage", rpc(lambda s, m, w: s.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(page_token="garbage!"), metadata=m)), IA,
         "page_token"),
    Case("list-page-size-negative", rpc(lambda s, m, w: s.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(page_size=-1), metadata=m)), IA, "page_size"),
    Case("watch-after-negative", rpc(lambda s, m, w: s.dep.WatchDeployment(
        deployment_pb2.WatchDeploymentRequest(name=w.dep, after_sequence=-1), metadata=m,
        timeout=5)), IA, "after_sequence"),
    # Tokens
    Case("token-role-missing", rpc(lambda s, m, w: s.tok.CreateToken(
        admin_pb2.CreateTokenRequest(display_name="x"), metadata=m)), IA, "role"),
    Case("token-revoke-name-bad", rpc(lambda s, m, w: s.tok.RevokeToken(
        admin_pb2.RevokeTokenRequest(name="../x"), metadata=m)), IA, "name"),
    Case("token-create-by-deployer", rpc(lambda s, m, w: s.tok.CreateToken(
        admin_pb2.CreateTokenRequest(role=admin_pb2.TOKEN_ROLE_ADMIN), metadata=m), "ci"),
         "PERMISSION_DENIED"),
    # The agent stream
    Case("agent-hello-bad-id", lambda w: w.connect("agent1", "../a1"), IA, "hello.agent_id"),
    Case("agent-hello-not-first", lambda w: w.connect(
        "agent1", first=agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat())), IA, "hello"),
    Case("agent-connect-reader-token", lambda w: w.connect("reader"), "PERMISSION_DENIED"),
    Case("agent-connect-revoked-token", lambda w: w.connect("revoked"), "UNAUTHENTICATED"),
    Case("agent-stale-epoch", report(progress=lambda w: agent_pb2.Progress(
        deployment_id=w.dep, lease_id=w.lease.lease_id, epoch=w.epoch - 1, sequence=99,
        message="stale")), "REVOKE"),
    Case("agent-wrong-lease", report(ack=lambda w: agent_pb2.Ack(
        deployment_id=w.dep, lease_id="lease_forged", epoch=w.epoch)), "REVOKE"),
    Case("agent-unknown-deployment", report(result=lambda w: agent_pb2.Result(
        deployment_id="dep_nope", lease_id="lease_x", epoch=1,
        outcome=agent_pb2.OUTCOME_SUCCEEDED)), "REVOKE"),
    Case("agent-progress-after-terminal", report(progress=lambda w: agent_pb2.Progress(
        deployment_id=w.done, lease_id=w.done_lease.lease_id, epoch=w.done_lease.deployment.epoch,
        sequence=50, message="late")), "REVOKE"),
    Case("agent-result-after-terminal", report(result=lambda w: agent_pb2.Result(
        deployment_id=w.done, lease_id=w.done_lease.lease_id, epoch=w.done_lease.deployment.epoch,
        outcome=agent_pb2.OUTCOME_FAILED, reason="changed my mind")), "DONE"),
    # Last: it ends b1's stream.
    Case("agent-other-clusters-deployment", report("b1", ack=lambda w: agent_pb2.Ack(
        deployment_id=w.dep, lease_id=w.lease.lease_id, epoch=w.epoch)),
         "PERMISSION_DENIED"),
]  # fmt: skip


def test_the_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def serving(w: World) -> bool:
    with grpc.insecure_channel(w.srv.addr) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        w.s.clu.ListClusters(cluster_pb2.ListClustersRequest(), metadata=md(w.tokens["admin"]))
    return health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world: World, case: Case) -> None:
    before = logical_dump(world.srv.data)
    got = case.run(world)
    assert got.code == case.code, f"{case.id}: got {got}"
    if case.code == IA:
        assert case.field is not None
        assert any(f.startswith(case.field) for f in got.fields), (
            f"{case.id}: no violation of {case.field!r} in {got.fields}"
        )
    assert serving(world)
    after = logical_dump(world.srv.data)
    assert after == before, f"{case.id} changed the database"


def test_refusals_by_an_authenticated_caller_are_audited(world: World) -> None:
    by_id = {c.id: c for c in CASES}
    for name in (
        "deploy-service-rtl-override",
        "deploy-out-of-scope-service",
        "deploy-request-id-reused",
        "deploy-artifact-unknown",
        "artifact-git-repo-escape",
        "artifact-static-url-credentials",
        "artifact-ci-url-credentials",
    ):
        by_id[name].run(world)
    entries = world.s.audit.ListAudit(
        admin_pb2.ListAuditRequest(page_size=500), metadata=md(world.tokens["admin"])
    ).entries
    outcomes = {e.outcome for e in entries}
    assert {"INVALID_ARGUMENT", "PERMISSION_DENIED", "ALREADY_EXISTS", "NOT_FOUND"} <= outcomes
    # Values from refused requests are stored escaped: no raw control characters.
    for e in entries:
        for text in (e.target, e.detail, e.token_name):
            assert not any(ch in text for ch in ("\x00", "\u202e", "\u200b", "\x1b")), e
            # Credentials in a refused URL are neither stored nor shown.
            assert "hunter2" not in text, e


def test_nothing_from_the_yaml_ran(world: World) -> None:
    sync(put(MANIFEST, PYOBJ))(world)
    assert not Path("/tmp/pwned").exists()

"""Property-based fuzzing of the mutation RPCs over a real socket: whatever strings and
numbers land in CreateDeployment, RegisterArtifact and SyncManifests, the server answers with
one of the codes that mean "your request" (never INTERNAL or UNKNOWN, which would mean a bug
or a stack trace), and keeps serving.

Deterministic by default (the same examples on every run, bounded to a few seconds); set
SAMI_FUZZ_EXAMPLES=5000 SAMI_FUZZ_RANDOM=1 to search further.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sami.v1 import artifact_pb2, deployment_pb2, manifest_pb2
from sami_control import offline
from sami_control.core.settings import Settings
from tests import samples
from tests.security.conftest import REF, Server, Stubs, md, start_server, stop_server

EXAMPLES = int(os.environ.get("SAMI_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("SAMI_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
DIGEST = "sha256:" + "a" * 64

# Strings that have broken parsers before: homoglyphs, bidi and zero-width characters, NUL,
# escapes, paths, YAML and digest look-alikes.
NASTY = [
    "",
    "web",
    "stage",
    "production",
    "pull_request",
    "prod",
    "w\u0435b",
    "web\u202e",
    "w\u200beb",
    "web\x00",
    "../web",
    "/etc/passwd",
    "\x1b[2J",
    "sha256:",
    DIGEST,
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 128,
    f"127.0.0.1:5000/web@{DIGEST}",
    f"web@{DIGEST}",
    "web:latest",
    "art_0000000000000000",
    "artifacts/",
    "!!python/object/apply:os.system",
    "&a [*a, *a]",
    "%s%n%x",
    "'; DROP TABLE deployments; --",
    "\ud7ff\ue000\uffff",
    "a" * 70,
    "a" * 600,
]
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=80), st.text(max_size=700))
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Stubs, str, str]]:
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    srv = start_server(data, Settings())
    try:
        offline.add_cluster(data, "c1", ["stage", "production", "pull_request"])
        admin = srv.token("admin")
        s = Stubs(srv.channel())
        s.man.SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[
                    manifest_pb2.ManifestFile(path=p, content=c) for p, c in samples.repo().items()
                ]
            ),
            metadata=md(admin),
        )
        art = s.art.RegisterArtifact(
            artifact_pb2.RegisterArtifactRequest(
                artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
            ),
            metadata=md(admin),
        ).artifact.id
        yield srv, s, admin, art
    finally:
        stop_server(srv)


def code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def check(srv: Server, got: grpc.StatusCode, what: object) -> None:
    assert got in EXPECTED, f"{got} for {what!r}"


def healthy(srv: Server) -> None:
    with grpc.insecure_channel(srv.addr) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_fuzz_create_deployment(fuzz: tuple[Server, Stubs, str, str]) -> None:
    srv, s, admin, art = fuzz

    @FUZZ
    @given(
        service=text,
        environment=st.one_of(st.sampled_from(["stage", "production", "pull_request"]), text),
        artifact=st.one_of(st.just(art), st.just(f"artifacts/{art}"), text),
        pull_request=st.one_of(st.integers(0, 5), int32),
        reason=text,
        request_id=st.one_of(st.just(""), text),
        deployment_type=st.one_of(st.just(""), st.sampled_from(["swarm", "k8s", "cron"]), text),
    )
    def run(**kw: object) -> None:
        req = deployment_pb2.CreateDeploymentRequest(**kw)  # type: ignore[arg-type]
        check(srv, code(lambda: s.dep.CreateDeployment(req, metadata=md(admin), timeout=10)), kw)

    run()
    healthy(srv)


def test_fuzz_register_artifact(fuzz: tuple[Server, Stubs, str, str]) -> None:
    srv, s, admin, _ = fuzz

    @FUZZ
    @given(
        artifact_name=text,
        kind=st.one_of(st.integers(0, 4), int32),
        ref=st.one_of(st.just(f"reg.example/x@{DIGEST}"), st.just("https://x.example/a.tgz"), text),
        digest=st.one_of(st.just(""), st.just(DIGEST), text),
        tags=st.lists(text, max_size=60),
        labels=st.dictionaries(text, text, max_size=70),
        git_repo=text,
        git_commit=st.one_of(st.just("a" * 40), text),
        ci_run_url=st.one_of(st.just("https://ci.example/1"), text),
    )
    def run(git_repo: str, git_commit: str, ci_run_url: str, **kw: object) -> None:
        a = artifact_pb2.Artifact(
            **kw,  # type: ignore[arg-type]
            provenance=artifact_pb2.Provenance(
                git_repo=git_repo, git_commit=git_commit, ci_run_url=ci_run_url
            ),
        )
        req = artifact_pb2.RegisterArtifactRequest(artifact=a)
        check(srv, code(lambda: s.art.RegisterArtifact(req, metadata=md(admin), timeout=10)), a)

    run()
    healthy(srv)


MANIFEST = "services/web/swarm/stage/sami.yaml"
STACK = "services/web/swarm/stage/stack.yml"
yaml_text = st.one_of(
    st.text(max_size=400),
    st.lists(
        st.sampled_from(
            [
                "version: v1beta\n",
                "service_name: web\n",
                "type: swarm\n",
                "stack_files: [stack.yml]\n",
                "converge_timeout: 60s\n",
                "pr_deploy: true\n",
                "a: &a [1, 2]\n",
                "b: [*a, *a, *a]\n",
                "c: !!python/object/apply:os.system ['id']\n",
                "d: {{{{\n",
                "  - x\n",
                "\t\x00\n",
                "services: {web: {image: x}}\n",
            ]
        ),
        max_size=12,
    ).map("".join),
)


def test_fuzz_sync_manifests(fuzz: tuple[Server, Stubs, str, str]) -> None:
    srv, s, admin, _ = fuzz

    @FUZZ
    @given(
        commit=st.one_of(st.just(""), st.just("a" * 40), text),
        manifest=st.one_of(yaml_text.map(str.encode), st.binary(max_size=300)),
        stack=st.one_of(yaml_text.map(str.encode), st.binary(max_size=300)),
        extra=st.lists(st.tuples(text, st.binary(max_size=100)), max_size=4),
    )
    def run(commit: str, manifest: bytes, stack: bytes, extra: list[tuple[str, bytes]]) -> None:
        files = samples.repo()
        files[MANIFEST] = manifest
        files[STACK] = stack
        req = manifest_pb2.SyncManifestsRequest(
            commit=commit,
            files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
            + [manifest_pb2.ManifestFile(path=p, content=c) for p, c in extra],
        )
        what = (commit, manifest[:100], stack[:100], extra)
        check(srv, code(lambda: s.man.SyncManifests(req, metadata=md(admin), timeout=10)), what)

    run()
    healthy(srv)

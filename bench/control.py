"""The control plane under test: `python -m sami_control serve` in its own process, with a
data folder prepared offline (cluster, tokens) and over the API (manifests, an artifact)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import PY, REPO, free_port
from sami_manifests import ENVIRONMENTS

CLUSTER = "bench"
# A digest-pinned image ref: the dry-run and simulated agents never pull it.
IMAGE_REF = "127.0.0.1:5000/bench@sha256:" + "b" * 64
# One agent or watch token may hold at most this many streams (the server's default limit
# is 32 per token and kind); the benchmarks stay below it.
STREAMS_PER_TOKEN = 25

STACK = """\
services:
  {service}:
    image: 127.0.0.1:5000/{service}:latest
    command: ["sleep", "3600"]
    deploy:
      replicas: 1
"""

MANIFEST = """\
version: v1beta
service_name: {service}
type: swarm
stack_files:
  - stack.yml
image_services:
  - {service}
converge_timeout: 60s
"""


def service_names(count: int, prefix: str = "svc") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(count)]


def deployments_repo(
    services: Sequence[str],
    *,
    stack: str = STACK,
    manifest: str = MANIFEST,
    environments: Sequence[str] = ("stage",),
) -> dict[str, bytes]:
    """A deployments repo (path -> content) with one swarm folder per service and env."""
    files = {"README.md": b"# benchmark deployments\n"}
    for svc in services:
        for env in environments:
            folder = f"services/{svc}/swarm/{env}"
            files[f"{folder}/sami.yaml"] = manifest.format(service=svc).encode()
            files[f"{folder}/stack.yml"] = stack.format(service=svc).encode()
    return files


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class ControlPlane:
    """One `sami-control serve` process on a free loopback port, data under `root` (or in
    the PostgreSQL database `store`, which several of them may share: replicas)."""

    def __init__(
        self,
        root: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        store: str | None = None,
    ) -> None:
        self.root = root
        self.store = store
        self.data = root / "data"
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.log_path = root / "control.log"
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    # -- offline set-up (before or while serving) -------------------------------------------
    def create_cluster(self, name: str = CLUSTER, envs: Sequence[str] = ENVIRONMENTS) -> None:
        from sami_control import offline

        self.data.mkdir(parents=True, exist_ok=True)
        offline.add_cluster(self.data, name, list(envs), store=self.store)

    def tokens(self, role: str, count: int, *, cluster: str = "", name: str = "") -> list[str]:
        """`count` new tokens (what the offline `sami-control token create` does, in this
        process, with the store opened once: on PostgreSQL an open costs a pool)."""
        from sami_control.core.controlplane import ControlPlane as Core
        from sami_control.core.tokens import TokenInput
        from sami_control.offline import OFFLINE
        from sami_control.storage import open_store

        self.data.mkdir(parents=True, exist_ok=True)
        prefix = name or f"bench-{role}"

        async def create_all() -> list[str]:
            store = open_store(self.store, self.data)
            try:
                await store.open()
                core = Core(store)
                return [
                    (
                        await core.tokens.create(
                            OFFLINE, TokenInput(role, name=f"{prefix}-{i}", cluster=cluster)
                        )
                    ).plaintext
                    for i in range(count)
                ]
            finally:
                await store.close()

        return asyncio.run(create_all()) if count else []

    def token(self, role: str, *, cluster: str = "", name: str = "") -> str:
        return self.tokens(role, 1, cluster=cluster, name=name)[0]

    # -- the process ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> ControlPlane:
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("SAMI_")}
        env.update(SAMI_LOG_FORMAT="json", SAMI_LOG_LEVEL="info", PYTHONUNBUFFERED="1")
        env.update(self.env or {})
        argv = [
            PY,
            "-m",
            "sami_control",
            "serve",
            "--listen",
            self.addr,
            "--data",
            str(self.data),
            *(["--store", self.store] if self.store else []),
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"sami-control exited:\n{self.log_tail()}")
            with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(self.addr) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"sami-control not serving after {timeout} s:\n{self.log_tail()}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (graceful stop), then SIGKILL; by pid only."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def errors_logged(self) -> int:
        """Lines at level error in the control plane's log (the run must not hide them)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return sum(1 for line in f if '"level": "error"' in line)
        except OSError:
            return 0

    # -- over the API ------------------------------------------------------------------------
    def sync_manifests(self, token: str, files: dict[str, bytes]) -> str:
        from sami.v1 import manifest_pb2, manifest_pb2_grpc

        with grpc.insecure_channel(
            self.addr, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as ch:
            resp = manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
                manifest_pb2.SyncManifestsRequest(
                    commit="",
                    files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()],
                ),
                metadata=bearer(token),
                timeout=120,
            )
        return str(resp.revision.id)

    def register_artifact(self, token: str, name: str = "bench", ref: str = IMAGE_REF) -> str:
        from sami.v1 import artifact_pb2, artifact_pb2_grpc

        with grpc.insecure_channel(self.addr) as ch:
            resp = artifact_pb2_grpc.ArtifactServiceStub(ch).RegisterArtifact(
                artifact_pb2.RegisterArtifactRequest(
                    artifact=artifact_pb2.Artifact(artifact_name=name, ref=ref)
                ),
                metadata=bearer(token),
                timeout=30,
            )
        return str(resp.artifact.id)

    def create_deployment(self, token: str, service: str, artifact: str, env: str = "stage") -> str:
        from sami.v1 import deployment_pb2, deployment_pb2_grpc

        with grpc.insecure_channel(self.addr) as ch:
            d = deployment_pb2_grpc.DeploymentServiceStub(ch).CreateDeployment(
                deployment_pb2.CreateDeploymentRequest(
                    service=service, environment=env, artifact=artifact
                ),
                metadata=bearer(token),
                timeout=30,
            )
        return str(d.id)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prepared(
    root: Path,
    services: int,
    *,
    client_tokens: int = 1,
    agent_tokens: int = 0,
    reader_tokens: int = 0,
    extra: Sequence[str] = (),
    store: str | None = None,
) -> tuple[ControlPlane, dict[str, list[str]], str]:
    """A started control plane with the cluster, tokens, `services` synced manifests (stage)
    and one registered artifact, on SQLite in `root` or on PostgreSQL (`store`). Returns
    (control plane, tokens by role, artifact id)."""
    cp = ControlPlane(root, *extra, store=store)
    cp.create_cluster()
    toks = {
        "admin": cp.tokens("admin", 1, name="bench-admin"),
        "deployer": cp.tokens("deployer", client_tokens, name="bench-client"),
        "agent": cp.tokens("agent", agent_tokens, cluster=CLUSTER, name="bench-agent"),
        "reader": cp.tokens("reader", reader_tokens, name="bench-reader"),
    }
    cp.start()
    try:
        if services:
            cp.sync_manifests(toks["admin"][0], deployments_repo(service_names(services)))
        artifact = cp.register_artifact(toks["admin"][0])
    except BaseException:
        cp.stop()
        raise
    return cp, toks, artifact

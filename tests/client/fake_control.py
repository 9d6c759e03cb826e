"""A fake sami-control for the client tests: the Artifact, Deployment and Cluster services
served by a real grpc server on 127.0.0.1, backed by in-memory state that survives a restart
of the server (as the real one's database would).

Deployments follow a script of events that the test can hold back and release, and watch
calls can be made to misbehave (drop the stream, end it early, skip or repeat events) to
exercise the client's resume logic.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sami.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
)

ADMIN_TOKEN = "admin-token-for-tests"
READER_TOKEN = "reader-token-for-tests"
DIGEST = "sha256:" + "ab" * 32
REF = f"127.0.0.1:5000/web@{DIGEST}"
# 12:01:03 UTC; lines are compared without their clock column.
EVENT_TIME = timestamp_pb2.Timestamp(seconds=1_714_564_863)
ENVIRONMENTS = ("stage", "production", "pull_request")
TERMINAL = {
    deployment_pb2.SUCCEEDED,
    deployment_pb2.FAILED,
    deployment_pb2.ROLLED_BACK,
    deployment_pb2.CANCELLED,
    deployment_pb2.SUPERSEDED,
}

Step = tuple["deployment_pb2.DeploymentState", "deployment_pb2.EventType", str, str]


def script(outcome: deployment_pb2.DeploymentState, message: str) -> list[Step]:
    """Six events: queued, assigned, applying, two progress reports, the outcome."""
    s, p = deployment_pb2.STATE_CHANGED, deployment_pb2.PROGRESS
    return [
        (deployment_pb2.QUEUED, s, "", "queued"),
        (deployment_pb2.ASSIGNED, s, "", "assigned to manager-1"),
        (deployment_pb2.IN_PROGRESS, s, "apply", "docker stack deploy stage_web"),
        (deployment_pb2.IN_PROGRESS, p, "converge", "web 1/2 running (new)"),
        (deployment_pb2.IN_PROGRESS, p, "converge", "web 2/2 running (new)"),
        (outcome, s, "", message),
    ]


@dataclass
class WatchFault:
    """What the next WatchDeployment call does wrong, after sending event `after`."""

    kind: str  # "abort" (UNAVAILABLE), "end" (stream ends early), "gap" (skips one), "repeat"
    after: int


@dataclass
class FakeControl:
    token: str | None = ADMIN_TOKEN
    # The script of the next deployments, and how many of its events are visible at once.
    steps: list[Step] = field(
        default_factory=lambda: script(deployment_pb2.SUCCEEDED, "web converged: 2/2 running")
    )
    release_on_create: int | None = None  # None: all
    watch_faults: list[WatchFault] = field(default_factory=list)
    # Largest page the fake returns, so paging is exercised with few items.
    max_page_size: int = 2
    # Methods (e.g. "CreateDeployment") that record their request and then fail with
    # UNAVAILABLE, as a replica that dies after reading a request does (see `received`).
    drop_after_receipt: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.artifacts: list[artifact_pb2.Artifact] = []
        self.deployments: dict[str, deployment_pb2.Deployment] = {}
        self.events: dict[str, list[deployment_pb2.DeploymentEvent]] = {}
        self.released: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.watch_calls: list[tuple[str, int]] = []
        # (method, request) of every CreateDeployment, GetDeployment and CancelDeployment.
        self.received: list[tuple[str, object]] = []
        self.clusters = [
            cluster_pb2.Cluster(name="clusters/vps1", cluster_id="vps1", environments=["stage"])
        ]
        self.agents = [
            cluster_pb2.Agent(
                agent_id="manager-1",
                cluster="vps1",
                version="0.1.0",
                capabilities=["swarm"],
                connected=True,
                last_heartbeat_time=EVENT_TIME,
            )
        ]

    # Test controls

    def release(self, deployment_id: str, upto: int | None = None) -> None:
        with self.cond:
            total = len(self.events[deployment_id])
            self.released[deployment_id] = total if upto is None else upto
            self.cond.notify_all()

    def wait_sent(self, deployment_id: str, sequence: int, timeout: float = 10) -> None:
        """Block until a watcher was sent event `sequence`."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.sent.get(deployment_id, 0) >= sequence, timeout):
                raise AssertionError(f"event #{sequence} of {deployment_id} never sent")

    def add_deployment(self, steps: list[Step] | None = None, release: int | None = None) -> str:
        """A deployment created directly in the state, for watch/get tests."""
        return self._create(
            deployment_pb2.CreateDeploymentRequest(
                service="web", environment="stage", artifact=REF
            ),
            steps or self.steps,
            release,
        )

    def _create(
        self,
        request: deployment_pb2.CreateDeploymentRequest,
        steps: list[Step],
        release: int | None,
    ) -> str:
        with self.cond:
            deployment_id = f"d{len(self.deployments) + 1}"
            self.deployments[deployment_id] = deployment_pb2.Deployment(
                name=f"deployments/{deployment_id}",
                id=deployment_id,
                service=request.service,
                environment=request.environment,
                pull_request=request.pull_request,
                artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF, digest=DIGEST),
                reason=request.reason,
                request_id=request.request_id,
                rollback_of=request.rollback_of,
                cluster="vps1",
                deployment_type="swarm",
                stack_name=f"{request.environment}_{request.service}",
                create_time=EVENT_TIME,
            )
            self.events[deployment_id] = [
                deployment_pb2.DeploymentEvent(
                    deployment_id=deployment_id,
                    sequence=i,
                    type=kind,
                    state=state,
                    phase=phase,
                    message=message,
                    agent_id="manager-1" if i > 1 else "",
                    attempt=1,
                    time=EVENT_TIME,
                )
                for i, (state, kind, phase, message) in enumerate(steps, start=1)
            ]
            self.released[deployment_id] = len(steps) if release is None else release
            return deployment_id

    def snapshot(self, deployment_id: str) -> deployment_pb2.Deployment:
        with self.cond:
            d = deployment_pb2.Deployment()
            d.CopyFrom(self.deployments[deployment_id])
            released = self.events[deployment_id][: self.released[deployment_id]]
            if released:
                d.state = released[-1].state
                d.last_sequence = released[-1].sequence
                if d.state in TERMINAL:
                    d.status_message = released[-1].message
                    d.finish_time.CopyFrom(EVENT_TIME)
            return d


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    violations: list[tuple[str, str]] | None = None,
) -> None:
    details = []
    if violations:
        packed = any_pb2.Any()
        packed.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        details.append(packed)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    context.abort_with_status(rpc_status.to_status(status))


def _authorize(control: FakeControl, context: grpc.ServicerContext, *, mutation: bool) -> None:
    if control.token is None:
        return
    auth = dict(context.invocation_metadata()).get("authorization", "")
    if auth == f"Bearer {control.token}":
        return
    if auth == f"Bearer {READER_TOKEN}":
        if mutation:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "role reader may not deploy")
        return
    _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")


def _receive(
    control: FakeControl, context: grpc.ServicerContext, method: str, request: object
) -> None:
    with control.cond:
        control.received.append((method, request))
    if method in control.drop_after_receipt:
        _abort(context, grpc.StatusCode.UNAVAILABLE, "fake: replica went away after reading it")


def _page(items: list, token: str, size: int, cap: int) -> tuple[list, str]:
    start = int(token or 0)
    end = start + min(size or cap, cap)
    return items[start:end], str(end) if end < len(items) else ""


class _Artifacts(artifact_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, control: FakeControl) -> None:
        self.c = control

    def RegisterArtifact(self, request, context):
        _authorize(self.c, context, mutation=True)
        a = request.artifact
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", a.digest):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid artifact",
                [("artifact.digest", "must be sha256:<64 lower-case hex>")],
            )
        with self.c.cond:
            for stored in self.c.artifacts:
                if stored.artifact_name == a.artifact_name and stored.digest == a.digest:
                    return artifact_pb2.RegisterArtifactResponse(artifact=stored, created=False)
            stored = artifact_pb2.Artifact()
            stored.CopyFrom(a)
            stored.id = f"a{len(self.c.artifacts) + 1}"
            stored.name = f"artifacts/{stored.id}"
            stored.created_by = "ci"
            stored.create_time.CopyFrom(EVENT_TIME)
            self.c.artifacts.append(stored)
        return artifact_pb2.RegisterArtifactResponse(artifact=stored, created=True)

    def GetArtifact(self, request, context):
        _authorize(self.c, context, mutation=False)
        for a in self.c.artifacts:
            if request.name in (a.id, a.name, a.ref, f"{a.artifact_name}@{a.digest}"):
                return a
        _abort(context, grpc.StatusCode.NOT_FOUND, f"artifact {request.name} not found")

    def ListArtifacts(self, request, context):
        _authorize(self.c, context, mutation=False)
        matching = [
            a
            for a in reversed(self.c.artifacts)
            if not request.artifact_name or a.artifact_name == request.artifact_name
        ]
        page, token = _page(matching, request.page_token, request.page_size, self.c.max_page_size)
        return artifact_pb2.ListArtifactsResponse(artifacts=page, next_page_token=token)


class _Deployments(deployment_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, control: FakeControl) -> None:
        self.c = control

    def _find(self, name: str, context: grpc.ServicerContext) -> str:
        deployment_id = name.removeprefix("deployments/")
        if deployment_id not in self.c.deployments:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"deployment {name} not found")
        return deployment_id

    def CreateDeployment(self, request, context):
        _authorize(self.c, context, mutation=True)
        _receive(self.c, context, "CreateDeployment", request)
        violations = []
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", request.service):
            violations.append(("service", "must be lower case letters, digits and '-'"))
        if request.environment not in ENVIRONMENTS:
            violations.append(("environment", "must be stage, production or pull_request"))
        if violations:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid deployment", violations)
        if request.artifact not in (REF, "web@" + DIGEST):
            _abort(
                context, grpc.StatusCode.NOT_FOUND, f"artifact {request.artifact} is not registered"
            )
        if not any(request.environment in c.environments for c in self.c.clusters):
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no cluster serves environment {request.environment}: run "
                f"`sami cluster create NAME --env {request.environment}`",
            )
        if request.request_id:
            for d in self.c.deployments.values():
                if d.request_id == request.request_id:
                    if (d.service, d.environment) != (request.service, request.environment):
                        _abort(
                            context,
                            grpc.StatusCode.ALREADY_EXISTS,
                            f"request_id {request.request_id} was used for another deployment",
                        )
                    return self.c.snapshot(d.id)
        deployment_id = self.c._create(request, self.c.steps, self.c.release_on_create)
        return self.c.snapshot(deployment_id)

    def GetDeployment(self, request, context):
        _authorize(self.c, context, mutation=False)
        _receive(self.c, context, "GetDeployment", request)
        return self.c.snapshot(self._find(request.name, context))

    def ListDeployments(self, request, context):
        _authorize(self.c, context, mutation=False)
        matching = [
            self.c.snapshot(i)
            for i in reversed(list(self.c.deployments))
            if (not request.service or self.c.deployments[i].service == request.service)
            and (
                not request.environment or self.c.deployments[i].environment == request.environment
            )
        ]
        if request.state:
            matching = [d for d in matching if d.state == request.state]
        page, token = _page(matching, request.page_token, request.page_size, self.c.max_page_size)
        return deployment_pb2.ListDeploymentsResponse(deployments=page, next_page_token=token)

    def CancelDeployment(self, request, context):
        _authorize(self.c, context, mutation=True)
        _receive(self.c, context, "CancelDeployment", request)
        deployment_id = self._find(request.name, context)
        with self.c.cond:
            self.c.deployments[deployment_id].cancel_requested = True
        return self.c.snapshot(deployment_id)

    def WatchDeployment(self, request, context) -> Iterator[deployment_pb2.WatchDeploymentResponse]:
        _authorize(self.c, context, mutation=False)
        deployment_id = self._find(request.name, context)
        with self.c.cond:
            self.c.watch_calls.append((deployment_id, request.after_sequence))
            fault = self.c.watch_faults.pop(0) if self.c.watch_faults else None
        snapshot = self.c.snapshot(deployment_id)
        yield deployment_pb2.WatchDeploymentResponse(deployment=snapshot)
        last = request.after_sequence
        if snapshot.state in TERMINAL and snapshot.last_sequence <= last:
            return  # Finished, and the client has seen every event.
        if fault and fault.kind == "repeat":
            # Events the client has already seen, which it must not show again.
            for ev in self.c.events[deployment_id][:last]:
                yield deployment_pb2.WatchDeploymentResponse(event=ev)
        while context.is_active():
            with self.c.cond:
                self.c.cond.wait_for(
                    lambda last=last: (
                        self.c.released[deployment_id] > last or not context.is_active()
                    ),
                    timeout=0.05,
                )
                ready = self.c.events[deployment_id][last : self.c.released[deployment_id]]
            for ev in ready:
                if fault and fault.kind == "gap" and ev.sequence == fault.after + 1:
                    last = ev.sequence
                    continue
                yield deployment_pb2.WatchDeploymentResponse(event=ev)
                last = ev.sequence
                with self.c.cond:
                    self.c.sent[deployment_id] = max(self.c.sent.get(deployment_id, 0), last)
                    self.c.cond.notify_all()
                if ev.state in TERMINAL:
                    return
                if fault and ev.sequence == fault.after:
                    if fault.kind == "abort":
                        _abort(context, grpc.StatusCode.UNAVAILABLE, "fake: connection dropped")
                    if fault.kind == "end":
                        return


class _Clusters(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, control: FakeControl) -> None:
        self.c = control

    def CreateCluster(self, request, context):
        _authorize(self.c, context, mutation=True)
        if any(c.cluster_id == request.cluster_id for c in self.c.clusters):
            _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"cluster {request.cluster_id} exists")
        cluster = cluster_pb2.Cluster(
            name=f"clusters/{request.cluster_id}",
            cluster_id=request.cluster_id,
            environments=request.environments,
            create_time=EVENT_TIME,
        )
        self.c.clusters.append(cluster)
        return cluster

    def ListClusters(self, request, context):
        _authorize(self.c, context, mutation=False)
        return cluster_pb2.ListClustersResponse(clusters=self.c.clusters)

    def ListAgents(self, request, context):
        _authorize(self.c, context, mutation=False)
        agents = [a for a in self.c.agents if not request.cluster or a.cluster == request.cluster]
        # Pages of at most 1, as a server with many agents answers: the client follows them.
        page, nxt = _page(agents, request.page_token, request.page_size, 1)
        return cluster_pb2.ListAgentsResponse(agents=page, next_page_token=nxt)

    def RemoveAgent(self, request, context):
        _authorize(self.c, context, mutation=True)
        for a in self.c.agents:
            if (a.cluster, a.agent_id) == (request.cluster, request.agent_id):
                if a.connected:
                    _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "agent is connected")
                self.c.agents.remove(a)
                return a
        _abort(context, grpc.StatusCode.NOT_FOUND, f"no agent {request.agent_id}")


class FakeServer:
    """The fake's grpc server; `restart()` comes back on the same port with the same state."""

    def __init__(self, control: FakeControl, host: str = "127.0.0.1") -> None:
        self.control = control
        self.host = host  # "[::1]" for IPv6
        self.port = 0
        self._server: grpc.Server | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(_Artifacts(self.control), server)
        deployment_pb2_grpc.add_DeploymentServiceServicer_to_server(
            _Deployments(self.control), server
        )
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(_Clusters(self.control), server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

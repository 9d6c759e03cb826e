"""Typed client for the sami.v1 API: one method per RPC, protobuf messages in and out,
`SamiError` for every failure, and a deployment watch that survives control-plane restarts.

A `SamiClient` is meant to be used from one thread at a time: a watch that reconnects swaps
the client's channel for a fresh one. Given several control-plane addresses it moves to the
next one when the one it uses is unreachable (sami_client/failover.py says when that is safe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import grpc

from sami_client.calls import DEFAULT_PAGE_SIZE, LockAndCronCalls
from sami_client.errors import SamiError, WatchGapError, WatchTimeout
from sami_client.failover import FailoverChannel
from sami_client.notify_calls import NotifyCalls
from sami_client.pb import (
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    cron_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    lock_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    notify_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    secret_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    status_pb2_grpc,
)
from sami_client.secret_calls import SecretCalls
from sami_common.backoff import Backoff
from sami_common.dial import CHANNEL_OPTIONS, Endpoint
from sami_common.imageref import normalize_artifact_ref

WatchItem = deployment_pb2.Deployment | deployment_pb2.DeploymentEvent

TERMINAL_STATES = frozenset(
    {
        deployment_pb2.SUCCEEDED,
        deployment_pb2.FAILED,
        deployment_pb2.ROLLED_BACK,
        deployment_pb2.CANCELLED,
        deployment_pb2.SUPERSEDED,
    }
)

# A watch reconnects after these: the control plane went away (restart, network, a proxy
# dropping the stream), it did not refuse the request.
_RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})

DEFAULT_CALL_TIMEOUT = 30.0

# The largest message the channel sends (sami-control accepts as much): a bigger sync would
# fail with a bare RESOURCE_EXHAUSTED, so it is refused before sending, with the sizes.
MAX_MESSAGE_BYTES = dict(CHANNEL_OPTIONS).get("grpc.max_send_message_length", 4 * 1024 * 1024)

# Called before each reconnect of a watch with the error that broke the stream (None when the
# stream simply ended early) and the delay before the next attempt.
ReconnectCallback = Callable[[SamiError | None, float], None]


@contextmanager
def _translated_errors() -> Iterator[None]:
    """The one place where grpc errors become SamiError."""
    try:
        yield
    except grpc.RpcError as err:
        raise SamiError.from_rpc_error(err) from err


class SamiClient(LockAndCronCalls, NotifyCalls, SecretCalls):
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.endpoint = endpoint
        self._call_timeout = call_timeout
        self._backoff = backoff
        # The stubs are bound to the FailoverChannel, which dials the address in use when a
        # call is made: they outlive every switch of address.
        self._channel = FailoverChannel(endpoint)
        self._artifacts = artifact_pb2_grpc.ArtifactServiceStub(self._channel)
        self._deployments = deployment_pb2_grpc.DeploymentServiceStub(self._channel)
        self._clusters = cluster_pb2_grpc.ClusterServiceStub(self._channel)
        self._server = server_pb2_grpc.ServerServiceStub(self._channel)
        self._manifests = manifest_pb2_grpc.ManifestServiceStub(self._channel)
        self._cron = cron_pb2_grpc.CronServiceStub(self._channel)
        self._locks = lock_pb2_grpc.LockServiceStub(self._channel)
        self._notify = notify_pb2_grpc.NotificationServiceStub(self._channel)
        self._status = status_pb2_grpc.StatusServiceStub(self._channel)
        self._queries = query_pb2_grpc.QueryServiceStub(self._channel)
        self._secrets = secret_pb2_grpc.SecretServiceStub(self._channel)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every control-plane address this client may use, in the order given."""
        return self._channel.addresses

    @property
    def address(self) -> str:
        """The address in use now."""
        return self._channel.address

    @property
    def next_address(self) -> str:
        """Where the client goes after a failure of `address` (itself, when it is the only one)."""
        return self._channel.next_address

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SamiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        with _translated_errors():
            return method(
                request,
                metadata=self.endpoint.metadata(),
                timeout=self._call_timeout if timeout is None else timeout,
            )

    def _paged(self, method: Any, request: Any, items: str) -> Iterator[Any]:
        """The `items` of every page of a List call, fetched as the caller iterates."""
        while True:
            page = self._call(method, request)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # Artifacts

    def register_artifact(
        self, artifact: artifact_pb2.Artifact
    ) -> artifact_pb2.RegisterArtifactResponse:
        response: artifact_pb2.RegisterArtifactResponse = self._call(
            self._artifacts.RegisterArtifact,
            artifact_pb2.RegisterArtifactRequest(artifact=artifact),
        )
        return response

    def get_artifact(self, name: str) -> artifact_pb2.Artifact:
        artifact: artifact_pb2.Artifact = self._call(
            self._artifacts.GetArtifact,
            artifact_pb2.GetArtifactRequest(name=normalize_artifact_ref(name)),
        )
        return artifact

    def list_artifacts(
        self, artifact_name: str = "", *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[artifact_pb2.Artifact]:
        """Every matching artifact, fetching pages as the caller iterates."""
        return self._paged(
            self._artifacts.ListArtifacts,
            artifact_pb2.ListArtifactsRequest(artifact_name=artifact_name, page_size=page_size),
            "artifacts",
        )

    # Deployments

    def create_deployment(
        self,
        service: str,
        environment: str,
        artifact: str,
        *,
        pull_request: int = 0,
        reason: str = "",
        request_id: str = "",
        deployment_type: str = "",
        rollback_of: str = "",
        force: bool = False,
    ) -> deployment_pb2.Deployment:
        """`deployment_type` (swarm, compose, ...) is needed only when the service has
        `environment` under several types in the current manifest revision; `rollback_of`
        makes the request a rollback to that deployment (whose artifact is `artifact`);
        `force` deploys an artifact quarantined on the target (audited)."""
        deployment: deployment_pb2.Deployment = self._call(
            self._deployments.CreateDeployment,
            deployment_pb2.CreateDeploymentRequest(
                service=service,
                environment=environment,
                # `repo:tag@sha256:…` as `docker build` prints it: the tag is dropped.
                artifact=normalize_artifact_ref(artifact),
                pull_request=pull_request,
                reason=reason,
                request_id=request_id,
                deployment_type=deployment_type,
                rollback_of=rollback_of,
                force=force,
            ),
        )
        return deployment

    def get_deployment(
        self, name: str, *, retry_for: float | None = None
    ) -> deployment_pb2.Deployment:
        """`retry_for`: keep retrying for that many seconds while the control plane is
        unreachable (used to read the outcome right after a watch)."""
        request = deployment_pb2.GetDeploymentRequest(name=name)
        if retry_for is None:
            deployment: deployment_pb2.Deployment = self._call(
                self._deployments.GetDeployment, request
            )
            return deployment
        deadline = time.monotonic() + retry_for
        backoff = self._backoff()
        while True:
            remaining = deadline - time.monotonic()
            try:
                deployment = self._call(
                    self._deployments.GetDeployment,
                    request,
                    timeout=max(0.001, min(self._call_timeout, remaining)),
                )
                return deployment
            except SamiError as err:
                if err.code not in _RESUMABLE_CODES or remaining <= 0:
                    raise
            time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
            self._channel.fail_over()

    def list_deployments(
        self,
        *,
        service: str = "",
        environment: str = "",
        state: deployment_pb2.DeploymentState = deployment_pb2.DEPLOYMENT_STATE_UNSPECIFIED,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[deployment_pb2.Deployment]:
        """Matching deployments, newest first, fetching pages as the caller iterates."""
        return self._paged(
            self._deployments.ListDeployments,
            deployment_pb2.ListDeploymentsRequest(
                service=service, environment=environment, state=state, page_size=page_size
            ),
            "deployments",
        )

    def history(
        self,
        service: str,
        environment: str,
        *,
        pull_request: int | None = None,
        state: deployment_pb2.DeploymentState = deployment_pb2.DEPLOYMENT_STATE_UNSPECIFIED,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[deployment_pb2.Deployment]:
        """The deployments (and preview teardowns) of `service` in `environment`, newest
        first, fetching pages as the caller iterates. `pull_request`: only that preview's
        (ListDeployments has no such filter, so it is applied here); None: every one."""
        for deployment in self.list_deployments(
            service=service, environment=environment, state=state, page_size=page_size
        ):
            if pull_request is None or deployment.pull_request == pull_request:
                yield deployment

    def teardown_preview(
        self, service: str, pull_request: int, reason: str = "", request_id: str = ""
    ) -> deployment_pb2.Deployment:
        """Remove the preview stack of `service` for `pull_request`: a deployment with action
        TEARDOWN, followed like any other (`watch`)."""
        deployment: deployment_pb2.Deployment = self._call(
            self._deployments.TeardownPreview,
            deployment_pb2.TeardownPreviewRequest(
                service=service, pull_request=pull_request, reason=reason, request_id=request_id
            ),
        )
        return deployment

    def cancel_deployment(self, name: str, reason: str = "") -> deployment_pb2.Deployment:
        deployment: deployment_pb2.Deployment = self._call(
            self._deployments.CancelDeployment,
            deployment_pb2.CancelDeploymentRequest(name=name, reason=reason),
        )
        return deployment

    def approve_deployment(self, name: str, comment: str = "") -> deployment_pb2.Deployment:
        """Release a deployment AWAITING_APPROVAL into the queue (another identity only)."""
        deployment: deployment_pb2.Deployment = self._call(
            self._deployments.ApproveDeployment,
            deployment_pb2.ApproveDeploymentRequest(name=name, comment=comment),
        )
        return deployment

    def reject_deployment(self, name: str, reason: str) -> deployment_pb2.Deployment:
        """End a deployment AWAITING_APPROVAL (CANCELLED, with the reason)."""
        deployment: deployment_pb2.Deployment = self._call(
            self._deployments.RejectDeployment,
            deployment_pb2.RejectDeploymentRequest(name=name, reason=reason),
        )
        return deployment

    def watch(
        self,
        name: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        on_reconnect: ReconnectCallback | None = None,
    ) -> Iterator[WatchItem]:
        """Yield the deployment as it is now, then every event after `after_sequence` in order,
        ending after the event that reaches a terminal state.

        When the control plane goes away (UNAVAILABLE, or a stream that ends before the
        terminal event) the watch reconnects with backoff and resumes after the last event it
        yielded, so no event is yielded twice or skipped; a gap in sequence numbers raises
        `WatchGapError`. Past `timeout` seconds it raises `WatchTimeout`. Other errors
        (NOT_FOUND, UNAUTHENTICATED, ...) are raised as `SamiError` at once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_sequence
        snapshot_yielded = False
        backoff = self._backoff()
        last_error: SamiError | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WatchTimeout(name, timeout, last, last_error)
            snapshot: deployment_pb2.Deployment | None = None
            stream = self._watch_stream(name, last, remaining)
            try:
                for item in stream:
                    if isinstance(item, deployment_pb2.Deployment):
                        # Re-sent on every reconnect; the caller gets it only once.
                        snapshot = item
                        backoff.reset()
                        last_error = None
                        if not snapshot_yielded:
                            snapshot_yielded = True
                            yield item
                        continue
                    if item.sequence <= last:
                        continue  # Already yielded: never show an event twice.
                    if item.sequence != last + 1:
                        raise WatchGapError(name, last + 1, item.sequence)
                    last = item.sequence
                    yield item
                    if item.state in TERMINAL_STATES:
                        return
            except SamiError as err:
                if isinstance(err, WatchGapError):
                    raise
                if err.code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise WatchTimeout(name, timeout, last, last_error) from err
                if err.code not in _RESUMABLE_CODES:
                    raise
                last_error = err
            else:
                # The stream ended without a terminal event. If the deployment had already
                # ended before this stream began, there is nothing left to wait for.
                if (
                    snapshot is not None
                    and snapshot.state in TERMINAL_STATES
                    and snapshot.last_sequence <= last
                ):
                    return
            finally:
                stream.close()
            delay = backoff.next_delay()
            if deadline is not None:
                delay = max(0.0, min(delay, deadline - time.monotonic()))
            if on_reconnect is not None:
                on_reconnect(last_error, delay)
            time.sleep(delay)
            self._channel.fail_over()

    def _watch_stream(
        self, name: str, after_sequence: int, timeout: float | None
    ) -> Generator[WatchItem, None, None]:
        request = deployment_pb2.WatchDeploymentRequest(name=name, after_sequence=after_sequence)
        with _translated_errors():
            stream = self._deployments.WatchDeployment(
                request, metadata=self.endpoint.metadata(), timeout=timeout
            )
            try:
                for response in stream:
                    kind = response.WhichOneof("item")
                    if kind == "deployment":
                        yield response.deployment
                    elif kind == "event":
                        yield response.event
            finally:
                # The caller may stop early (generator closed): end the RPC with it.
                stream.cancel()

    # Manifest revisions

    def sync_manifests(
        self, files: Mapping[str, bytes], commit: str = ""
    ) -> manifest_pb2.SyncManifestsResponse:
        """Upload a deployments repo (`{repo-relative posix path: bytes}`, as `read_tree`
        returns it) as a manifest revision; sami-control validates it again and makes it
        current. `created` is False when the same files were already stored."""
        request = manifest_pb2.SyncManifestsRequest(
            commit=commit,
            files=[
                manifest_pb2.ManifestFile(path=path, content=content)
                for path, content in sorted(files.items())
            ],
        )
        size = request.ByteSize()
        if size > MAX_MESSAGE_BYTES:
            raise SamiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the revision is {size} bytes, more than the {MAX_MESSAGE_BYTES} bytes one "
                "request may carry: remove large files from services/",
                [("files", f"{len(files)} files, {size} bytes")],
            )
        response: manifest_pb2.SyncManifestsResponse = self._call(
            self._manifests.SyncManifests, request
        )
        return response

    def get_manifest_revision(
        self, name: str = "current", *, include_files: bool = False
    ) -> manifest_pb2.ManifestRevision:
        """`name`: an id, `manifestRevisions/{id}` or `current`."""
        revision: manifest_pb2.ManifestRevision = self._call(
            self._manifests.GetManifestRevision,
            manifest_pb2.GetManifestRevisionRequest(name=name, include_files=include_files),
        )
        return revision

    def list_manifest_revisions(
        self, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[manifest_pb2.ManifestRevision]:
        """Every revision, most recently synced first, fetching pages as the caller iterates
        (without files; `get_manifest_revision` has them)."""
        return self._paged(
            self._manifests.ListManifestRevisions,
            manifest_pb2.ListManifestRevisionsRequest(page_size=page_size),
            "revisions",
        )

    # Clusters and agents

    def update_cluster(self, name: str, environments: Iterable[str]) -> cluster_pb2.Cluster:
        """Set every environment the cluster serves (one left out is no longer served)."""
        cluster: cluster_pb2.Cluster = self._call(
            self._clusters.UpdateCluster,
            cluster_pb2.UpdateClusterRequest(name=name, environments=list(environments)),
        )
        return cluster

    def create_cluster(self, cluster_id: str, environments: Iterable[str]) -> cluster_pb2.Cluster:
        cluster: cluster_pb2.Cluster = self._call(
            self._clusters.CreateCluster,
            cluster_pb2.CreateClusterRequest(
                cluster_id=cluster_id, environments=list(environments)
            ),
        )
        return cluster

    def get_cluster(self, name: str) -> cluster_pb2.Cluster:
        cluster: cluster_pb2.Cluster = self._call(
            self._clusters.GetCluster, cluster_pb2.GetClusterRequest(name=name)
        )
        return cluster

    def server_info(self) -> server_pb2.ServerInfo:
        """What the control plane is: its version and its store."""
        info: server_pb2.ServerInfo = self._call(
            self._server.GetServerInfo, server_pb2.GetServerInfoRequest()
        )
        return info

    def list_clusters(self) -> list[cluster_pb2.Cluster]:
        response: cluster_pb2.ListClustersResponse = self._call(
            self._clusters.ListClusters, cluster_pb2.ListClustersRequest()
        )
        return list(response.clusters)

    def list_agents(self, cluster: str = "") -> list[cluster_pb2.Agent]:
        """Every agent (of `cluster`, if given), following the pages."""
        return list(
            self._paged(
                self._clusters.ListAgents, cluster_pb2.ListAgentsRequest(cluster=cluster), "agents"
            )
        )

    # Queries answered by an agent (logs, plans)

    def service_logs(
        self,
        service: str,
        environment: str,
        *,
        pull_request: int = 0,
        since: float | None = None,
        tail: int = 0,
        follow: bool = False,
        calls: list[Any] | None = None,
    ) -> Iterator[query_pb2.LogLine]:
        """The service's log lines as the agent streams them; closing the iterator (or
        interrupting it) cancels the call, and the agent stops. The call is appended to
        `calls` when given, so that a signal handler may cancel it (`sami logs --follow`)."""
        request = query_pb2.ServiceLogsRequest(
            service=service, environment=environment, pull_request=pull_request, tail=tail
        )
        request.follow = follow
        if since is not None:
            request.since.FromNanoseconds(int(since * 1e9))
        # With several replicas, only the one the agent's stream is on can answer: the others
        # say UNAVAILABLE at once. Move on while nothing has arrived yet (once lines have
        # come, a broken stream is the answer: sending the call again would repeat them).
        tries = len(self.addresses)
        with _translated_errors():
            while True:
                tries -= 1
                call = self._queries.ServiceLogs(request, metadata=self.endpoint.metadata())
                if calls is not None:
                    calls.append(call)
                received = False
                try:
                    for response in call:
                        received = True
                        yield from response.lines
                    return
                except grpc.RpcError as err:
                    if received or tries <= 0 or err.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    self._channel.fail_over()
                finally:
                    call.cancel()

    def plan_deployment(
        self, service: str, environment: str, artifact: str, *, pull_request: int = 0
    ) -> query_pb2.PlanDeploymentResponse:
        """What deploying `artifact` would change, as an agent of the target computed it."""
        plan: query_pb2.PlanDeploymentResponse = self._call(
            self._queries.PlanDeployment,
            query_pb2.PlanDeploymentRequest(
                service=service,
                environment=environment,
                pull_request=pull_request,
                artifact=normalize_artifact_ref(artifact),
            ),
            timeout=max(self._call_timeout, 120.0),
        )
        return plan

    def remove_agent(self, cluster: str, agent_id: str) -> cluster_pb2.Agent:
        """Forget the record of an agent that is not connected (admin only)."""
        agent: cluster_pb2.Agent = self._call(
            self._clusters.RemoveAgent,
            cluster_pb2.RemoveAgentRequest(cluster=cluster, agent_id=agent_id),
        )
        return agent

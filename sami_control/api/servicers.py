"""Thin servicers: protobuf in, core call, protobuf out. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from sami_control.api import convert, cron, queries
from sami_control.api.auth import principal
from sami_control.api.pb import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)
from sami_control.api.rpc import Servicer
from sami_control.core.commands import CloseCommand, HeldLease
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from sami_control.core.model import Deployment, Event, State
from sami_control.core.sessions import AgentSession

log = structlog.get_logger("sami.api")

HELLO_TIMEOUT = 30.0


class ArtifactServicer(Servicer, artifact_pb2_grpc.ArtifactServiceServicer):
    async def RegisterArtifact(
        self, request: artifact_pb2.RegisterArtifactRequest, context: Any
    ) -> artifact_pb2.RegisterArtifactResponse:
        art, created = await self.core.artifacts.register(
            principal(), convert.artifact_input(request.artifact)
        )
        return artifact_pb2.RegisterArtifactResponse(
            artifact=convert.artifact(art), created=created
        )

    async def GetArtifact(
        self, request: artifact_pb2.GetArtifactRequest, context: Any
    ) -> artifact_pb2.Artifact:
        return convert.artifact(await self.core.artifacts.get(principal(), request.name))

    async def ListArtifacts(
        self, request: artifact_pb2.ListArtifactsRequest, context: Any
    ) -> artifact_pb2.ListArtifactsResponse:
        arts, nxt = await self.core.artifacts.list(
            principal(), request.artifact_name, request.page_size, request.page_token
        )
        return artifact_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact(a) for a in arts], next_page_token=nxt
        )


class EventBytes:
    """WatchDeploymentResponse bytes of recent events. The hub hands the same Event object
    to every watcher of a deployment: with this, a fan-out to N watchers converts and
    serializes the event once. An entry is used for the very object it was made from, or
    for an equal one (an event read back from the store: events never change)."""

    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._by_key: dict[tuple[str, int], tuple[Event, bytes]] = {}

    def serialized(self, e: Event) -> bytes:
        key = (e.deployment_id, e.sequence)
        hit = self._by_key.get(key)
        if hit is not None and (hit[0] is e or hit[0] == e):
            return hit[1]
        data = deployment_pb2.WatchDeploymentResponse(event=convert.event(e)).SerializeToString()
        if hit is None and len(self._by_key) >= self._limit:
            del self._by_key[next(iter(self._by_key))]  # the oldest
        self._by_key[key] = (e, data)
        return data


class DeploymentServicer(Servicer, deployment_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        super().__init__(core)
        self._events = EventBytes()

    async def _out(self, d: Deployment) -> deployment_pb2.Deployment:
        return convert.deployment(d, await self.core.artifacts.of(d))

    async def TeardownPreview(
        self, request: deployment_pb2.TeardownPreviewRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(
            await self.core.deployments.teardown_preview(
                principal(),
                request.service,
                request.pull_request,
                request.reason,
                request.request_id,
            )
        )

    async def CreateDeployment(
        self, request: deployment_pb2.CreateDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(
            await self.core.deployments.create(principal(), convert.deployment_input(request))
        )

    async def GetDeployment(
        self, request: deployment_pb2.GetDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(await self.core.deployments.get(principal(), request.name))

    async def ListDeployments(
        self, request: deployment_pb2.ListDeploymentsRequest, context: Any
    ) -> deployment_pb2.ListDeploymentsResponse:
        state = None
        if request.state:
            try:
                state = State(request.state)
            except ValueError:
                raise InvalidArgument("state", "is not a deployment state") from None
        rows, nxt = await self.core.deployments.list(
            principal(),
            request.service,
            request.environment,
            state,
            request.page_size,
            request.page_token,
        )
        return deployment_pb2.ListDeploymentsResponse(
            deployments=[await self._out(d) for d in rows], next_page_token=nxt
        )

    async def WatchDeployment(
        self, request: deployment_pb2.WatchDeploymentRequest, context: Any
    ) -> None:
        """Writes serialized WatchDeploymentResponse messages itself (registered without a
        response serializer, see add_deployment_service): a published event is converted and
        serialized once, not once per watcher. A coroutine rather than a generator, so an
        event goes to the wire without passing through a generator per interceptor."""
        # Closed at once (its stream released) when the write fails or is cancelled.
        watch = self.core.deployments.watch(principal(), request.name, request.after_sequence)
        async with contextlib.aclosing(watch) as items:
            async for item in items:
                if isinstance(item, Deployment):
                    data = deployment_pb2.WatchDeploymentResponse(
                        deployment=await self._out(item)
                    ).SerializeToString()
                else:
                    data = self._events.serialized(item)
                await context.write(data)

    async def CancelDeployment(
        self, request: deployment_pb2.CancelDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(
            await self.core.deployments.cancel(principal(), request.name, request.reason)
        )

    async def ApproveDeployment(
        self, request: deployment_pb2.ApproveDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(
            await self.core.approvals.approve(principal(), request.name, request.comment)
        )

    async def RejectDeployment(
        self, request: deployment_pb2.RejectDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return await self._out(
            await self.core.approvals.reject(principal(), request.name, request.reason)
        )


class ManifestServicer(Servicer, manifest_pb2_grpc.ManifestServiceServicer):
    async def SyncManifests(
        self, request: manifest_pb2.SyncManifestsRequest, context: Any
    ) -> manifest_pb2.SyncManifestsResponse:
        rev, created = await self.core.manifests.sync(
            principal(), request.commit, [(f.path, f.content) for f in request.files]
        )
        return manifest_pb2.SyncManifestsResponse(
            revision=convert.manifest_revision(rev, True), created=created
        )

    async def GetManifestRevision(
        self, request: manifest_pb2.GetManifestRevisionRequest, context: Any
    ) -> manifest_pb2.ManifestRevision:
        who = principal()
        rev, current = await self.core.manifests.get(who, request.name)
        files = await self.core.manifests.files(who, rev.id, request.include_files)
        return convert.manifest_revision(rev, current, files)

    async def ListManifestRevisions(
        self, request: manifest_pb2.ListManifestRevisionsRequest, context: Any
    ) -> manifest_pb2.ListManifestRevisionsResponse:
        revs, current, nxt = await self.core.manifests.list(
            principal(), request.page_size, request.page_token
        )
        return manifest_pb2.ListManifestRevisionsResponse(
            revisions=[convert.manifest_revision(r, r.id == current) for r in revs],
            next_page_token=nxt,
        )


class ClusterServicer(Servicer, cluster_pb2_grpc.ClusterServiceServicer):
    async def CreateCluster(
        self, request: cluster_pb2.CreateClusterRequest, context: Any
    ) -> cluster_pb2.Cluster:
        c = await self.core.clusters.create(
            principal(), request.cluster_id, list(request.environments)
        )
        return convert.cluster(c)

    async def UpdateCluster(
        self, request: cluster_pb2.UpdateClusterRequest, context: Any
    ) -> cluster_pb2.Cluster:
        c = await self.core.clusters.update(principal(), request.name, list(request.environments))
        return convert.cluster(c)

    async def GetCluster(
        self, request: cluster_pb2.GetClusterRequest, context: Any
    ) -> cluster_pb2.Cluster:
        return convert.cluster(await self.core.clusters.get(principal(), request.name))

    async def ListClusters(
        self, request: cluster_pb2.ListClustersRequest, context: Any
    ) -> cluster_pb2.ListClustersResponse:
        return cluster_pb2.ListClustersResponse(
            clusters=[convert.cluster(c) for c in await self.core.clusters.list(principal())]
        )

    async def ListAgents(
        self, request: cluster_pb2.ListAgentsRequest, context: Any
    ) -> cluster_pb2.ListAgentsResponse:
        agents, nxt = await self.core.agents.list(
            principal(), request.cluster, request.page_size, request.page_token
        )
        return cluster_pb2.ListAgentsResponse(
            agents=[convert.agent(a) for a in agents], next_page_token=nxt
        )

    async def RemoveAgent(
        self, request: cluster_pb2.RemoveAgentRequest, context: Any
    ) -> cluster_pb2.Agent:
        return convert.agent(
            await self.core.agents.remove(principal(), request.cluster, request.agent_id)
        )


class AgentServicer(Servicer, agent_pb2_grpc.AgentServiceServicer):
    """One stream per agent. The handler reads the agent's reports and feeds them to the
    core; the session's commands (assignments, cancels, revokes, heartbeat answers) are
    written by a task started when there is something to write, which ends once the outbox
    is empty (see _AgentStream): an idle agent costs one waiting coroutine, not two."""

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        who = principal()
        agent_id, version, capabilities, held, recipient = await _hello(request_iterator)
        session: AgentSession | None = None
        try:
            # The Welcome names the leases resumed: it is written once that is on disk.
            async with self.core.durable_call():
                session, resumed = await self.core.agents.connect(
                    who, agent_id, version, capabilities, held, recipient
                )
            del who, capabilities, held  # not kept for the life of the stream
            await context.write(
                agent_pb2.ControlMessage(
                    welcome=agent_pb2.Welcome(
                        cluster=session.cluster,
                        heartbeat_interval=convert.dur(self.core.settings.heartbeat_interval),
                        resumed_leases=[
                            agent_pb2.HeldLease(
                                deployment_id=h.deployment_id,
                                lease_id=h.lease_id,
                                epoch=h.epoch,
                            )
                            for h in resumed
                        ],
                    )
                )
            )
            del resumed
            await _AgentStream(session, context).serve(
                self._handle, request_iterator, self.core.writable
            )
        finally:
            if session is not None:
                self.core.agents.disconnect(session)
                # Its callers' logs and plans end now, saying why.
                self.core.relay.session_gone(session)

    async def _handle(self, s: AgentSession, msg: agent_pb2.AgentMessage) -> None:
        kind = msg.WhichOneof("msg")
        try:
            if kind == "ack":
                a = msg.ack
                await self.core.reports.ack(s, a.deployment_id, a.lease_id, a.epoch)
            elif kind == "progress":
                p = msg.progress
                await self.core.reports.progress(
                    s, p.deployment_id, p.lease_id, p.epoch, p.sequence, p.phase, p.message
                )
            elif kind == "result":
                r = msg.result
                await self.core.reports.result(
                    s, r.deployment_id, r.lease_id, r.epoch, r.outcome, r.reason
                )
            elif kind == "heartbeat":
                await self.core.reports.heartbeat(s, convert.held(msg.heartbeat.leases))
            elif kind == "inventory":
                await self.core.reports.inventory(s, convert.preview_stacks(msg.inventory.stacks))
            elif kind == "cron_run":
                await cron.handle_report(self.core, s, msg.cron_run)
            elif kind == "live_status":
                ls = msg.live_status
                await self.core.live.report(s, ls.full, convert.live_services(ls.services))
            elif kind in ("query_chunk", "query_end"):
                queries.relay_report(self.core.relay, s, kind, msg)
        except (PermissionDenied, Unauthenticated):
            raise
        except DomainError as exc:
            # One bad report must not cost the agent its stream (and its other leases).
            log.warning("agent_report_invalid", agent_id=s.agent_id, kind=kind, error=exc.message)


async def _hello(
    requests: Any,
) -> tuple[str, str, list[str], list[HeldLease], str]:
    """The agent's Hello: what the session needs of it, not the message (kept, it would
    hold its parsed protobuf for the whole life of the stream)."""
    try:
        first = await asyncio.wait_for(anext(aiter(requests)), HELLO_TIMEOUT)
    except (StopAsyncIteration, TimeoutError):
        raise InvalidArgument("hello", "send Hello as the first message") from None
    if first.WhichOneof("msg") != "hello":
        raise InvalidArgument("hello", "the first message must be Hello")
    hello = first.hello
    return (
        hello.agent_id,
        hello.version,
        list(hello.capabilities),
        convert.held(hello.held_leases),
        hello.recipient,
    )


class _AgentStream:
    """One agent stream, as served by its handler: the handler's task reads; commands
    are written by a writer task, started when the session's outbox gets one and ended
    when it is empty. A CloseCommand (or a failed write) ends the stream: the writer then
    cancels the handler's read, and the handler ends the call (OK, or the CloseCommand's
    error). A stream that ends otherwise (the agent closed it, a report was refused)
    first writes what was queued before it ended, as it always did."""

    __slots__ = ("_context", "_ended", "_reading", "_session", "_task", "_writer")

    def __init__(self, session: AgentSession, context: grpc.aio.ServicerContext) -> None:
        self._session = session
        self._context = context
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._writer: asyncio.Task[None] | None = None
        # Why the writer ended the stream: a CloseCommand, or the exception a write raised.
        self._ended: CloseCommand | BaseException | None = None
        self._reading = False

    def wake(self) -> None:
        """The outbox got a command: start writing unless a writer runs already."""
        if self._writer is None and self._ended is None:
            self._writer = self._task.get_loop().create_task(self._write())

    async def _write(self) -> None:
        outbox = self._session.outbox
        try:
            while not outbox.empty():
                cmd = outbox.get_nowait()
                if isinstance(cmd, CloseCommand):
                    self._end(cmd)
                    return
                msg = convert.command(cmd)
                if msg is not None:
                    await self._context.write(msg)
        except Exception as exc:  # the handler raises it
            self._end(exc)
        finally:
            self._writer = None

    def _end(self, why: CloseCommand | BaseException) -> None:
        self._ended = why
        if self._reading:
            self._task.cancel()  # interrupt the handler's read: see serve()

    async def serve(
        self,
        handle: Callable[[AgentSession, agent_pb2.AgentMessage], Awaitable[None]],
        requests: Any,
        writable: Callable[[], Awaitable[None]],
    ) -> None:
        """Read and handle reports until the stream ends, then end the call."""
        session = self._session
        session.outbox.on_put = self.wake
        try:
            if not session.outbox.empty():
                self.wake()  # queued while the Welcome was written
            failure: Exception | None = None
            self._reading = True
            try:
                while True:
                    # No reference to a report outlives its handling: an idle stream holds
                    # no parsed message while it waits for the next one.
                    msg = await anext(requests)
                    # While a commit is in flight the store is the committer's: wait for
                    # it here, not blocking the loop in the core (storage/sqlite.py).
                    await writable()
                    await handle(session, msg)
                    del msg
            except asyncio.CancelledError:
                if self._ended is None:
                    raise  # cancelled by grpc: the call is over
                self._task.uncancel()  # by the writer: it ended the stream
            except (StopAsyncIteration, grpc.aio.AioRpcError):
                failure = _AgentClosed()
            except Exception as exc:
                failure = exc
            finally:
                self._reading = False
            if failure is not None:
                # Write what was queued before the stream ended, then end it.
                if isinstance(failure, PermissionDenied | Unauthenticated):
                    session.outbox.put_nowait(CloseCommand(failure.message))
                else:
                    session.send(CloseCommand("the agent closed the stream"))
                if self._writer is not None:
                    await self._writer
                if not isinstance(failure, _AgentClosed):
                    raise failure
            why = self._ended
            if isinstance(why, CloseCommand):
                if why.fatal is not None:
                    raise why.fatal  # the token was revoked or expired
            elif why is not None:
                raise why  # a write failed
        finally:
            session.outbox.on_put = None
            writer = self._writer
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer


class _AgentClosed(Exception):
    """The agent closed its side of the stream."""


class TokenServicer(Servicer, admin_pb2_grpc.TokenServiceServicer):
    async def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: Any
    ) -> admin_pb2.CreateTokenResponse:
        issued = await self.core.tokens.create(principal(), convert.token_input(request))
        return admin_pb2.CreateTokenResponse(
            token=convert.token(issued.record), secret=issued.plaintext
        )

    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: Any
    ) -> admin_pb2.ListTokensResponse:
        rows = await self.core.tokens.list(principal(), request.include_revoked)
        return admin_pb2.ListTokensResponse(tokens=[convert.token(t) for t in rows])

    async def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: Any
    ) -> admin_pb2.Token:
        return convert.token(await self.core.tokens.revoke(principal(), request.name))


class AuditServicer(Servicer, admin_pb2_grpc.AuditServiceServicer):
    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: Any
    ) -> admin_pb2.ListAuditResponse:
        since = convert.seconds(request.since) if request.HasField("since") else 0.0
        rows, nxt = await self.core.audit.list(
            principal(), since, request.service, request.page_size, request.page_token
        )
        return admin_pb2.ListAuditResponse(
            entries=[convert.audit_entry(e) for e in rows], next_page_token=nxt
        )


class ServerServicer(Servicer, server_pb2_grpc.ServerServiceServicer):
    async def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: Any
    ) -> server_pb2.ServerInfo:
        info = self.core.info.get(principal())
        return server_pb2.ServerInfo(version=info.version, store=info.store)


class _Handlers:
    """Stands in for the server to collect what a generated add_..._to_server registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_deployment_service(servicer: DeploymentServicer, server: grpc.aio.Server) -> None:
    """What deployment_pb2_grpc.add_DeploymentServiceServicer_to_server does, except that
    WatchDeployment has no response serializer: its handler writes bytes (see
    DeploymentServicer.WatchDeployment)."""
    got = _Handlers()
    deployment_pb2_grpc.add_DeploymentServiceServicer_to_server(servicer, got)
    got.handlers["WatchDeployment"] = grpc.unary_stream_rpc_method_handler(
        servicer.WatchDeployment,
        request_deserializer=deployment_pb2.WatchDeploymentRequest.FromString,
        response_serializer=None,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(got.service, got.handlers),)
    )
    server.add_registered_method_handlers(got.service, got.handlers)

"""Thin servicers: protobuf in, core call, protobuf out. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import structlog

from sami.v1 import (
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
)
from sami_control.api import convert, cron
from sami_control.api.auth import principal
from sami_control.api.errors import mapped
from sami_control.core import paging
from sami_control.core.agents import AgentSession, CloseCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from sami_control.core.model import Deployment, State

log = structlog.get_logger("sami.api")

HELLO_TIMEOUT = 30.0


class ArtifactServicer(artifact_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def RegisterArtifact(
        self, request: artifact_pb2.RegisterArtifactRequest, context: Any
    ) -> artifact_pb2.RegisterArtifactResponse:
        art, created = self.core.register_artifact(
            principal(), convert.artifact_input(request.artifact)
        )
        return artifact_pb2.RegisterArtifactResponse(
            artifact=convert.artifact(art), created=created
        )

    @mapped
    async def GetArtifact(
        self, request: artifact_pb2.GetArtifactRequest, context: Any
    ) -> artifact_pb2.Artifact:
        return convert.artifact(self.core.get_artifact(principal(), request.name))

    @mapped
    async def ListArtifacts(
        self, request: artifact_pb2.ListArtifactsRequest, context: Any
    ) -> artifact_pb2.ListArtifactsResponse:
        arts, nxt = self.core.list_artifacts(
            principal(), request.artifact_name, request.page_size, request.page_token
        )
        return artifact_pb2.ListArtifactsResponse(
            artifacts=[convert.artifact(a) for a in arts], next_page_token=nxt
        )


class DeploymentServicer(deployment_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    def _out(self, d: Deployment) -> deployment_pb2.Deployment:
        return convert.deployment(d, self.core.artifact_of(d))

    @mapped
    async def TeardownPreview(
        self, request: deployment_pb2.TeardownPreviewRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return self._out(
            self.core.teardown_preview(
                principal(),
                request.service,
                request.pull_request,
                request.reason,
                request.request_id,
            )
        )

    @mapped
    async def CreateDeployment(
        self, request: deployment_pb2.CreateDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return self._out(
            self.core.create_deployment(principal(), convert.deployment_input(request))
        )

    @mapped
    async def GetDeployment(
        self, request: deployment_pb2.GetDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return self._out(self.core.get_deployment(principal(), request.name))

    @mapped
    async def ListDeployments(
        self, request: deployment_pb2.ListDeploymentsRequest, context: Any
    ) -> deployment_pb2.ListDeploymentsResponse:
        state = None
        if request.state:
            try:
                state = State(request.state)
            except ValueError:
                raise InvalidArgument("state", "is not a deployment state") from None
        rows, nxt = self.core.list_deployments(
            principal(),
            request.service,
            request.environment,
            state,
            request.page_size,
            request.page_token,
        )
        return deployment_pb2.ListDeploymentsResponse(
            deployments=[self._out(d) for d in rows], next_page_token=nxt
        )

    @mapped
    async def WatchDeployment(
        self, request: deployment_pb2.WatchDeploymentRequest, context: Any
    ) -> AsyncIterator[deployment_pb2.WatchDeploymentResponse]:
        async for item in self.core.watch(principal(), request.name, request.after_sequence):
            if isinstance(item, Deployment):
                yield deployment_pb2.WatchDeploymentResponse(deployment=self._out(item))
            else:
                yield deployment_pb2.WatchDeploymentResponse(event=convert.event(item))

    @mapped
    async def CancelDeployment(
        self, request: deployment_pb2.CancelDeploymentRequest, context: Any
    ) -> deployment_pb2.Deployment:
        return self._out(self.core.cancel_deployment(principal(), request.name, request.reason))


class ManifestServicer(manifest_pb2_grpc.ManifestServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def SyncManifests(
        self, request: manifest_pb2.SyncManifestsRequest, context: Any
    ) -> manifest_pb2.SyncManifestsResponse:
        rev, created = self.core.manifests.sync(
            principal(), request.commit, [(f.path, f.content) for f in request.files]
        )
        return manifest_pb2.SyncManifestsResponse(
            revision=convert.manifest_revision(rev, True), created=created
        )

    @mapped
    async def GetManifestRevision(
        self, request: manifest_pb2.GetManifestRevisionRequest, context: Any
    ) -> manifest_pb2.ManifestRevision:
        rev, current = self.core.manifests.get(principal(), request.name)
        files = self.core.manifests.files(rev.id) if request.include_files else None
        return convert.manifest_revision(rev, current, files)

    @mapped
    async def ListManifestRevisions(
        self, request: manifest_pb2.ListManifestRevisionsRequest, context: Any
    ) -> manifest_pb2.ListManifestRevisionsResponse:
        before, limit = paging.parse_page(request.page_token, request.page_size)
        revs, current = self.core.manifests.list(principal(), before, limit + 1)
        nxt = paging.page_token(revs[limit - 1].synced_seq) if len(revs) > limit else ""
        return manifest_pb2.ListManifestRevisionsResponse(
            revisions=[convert.manifest_revision(r, r.id == current) for r in revs[:limit]],
            next_page_token=nxt,
        )


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def CreateCluster(
        self, request: cluster_pb2.CreateClusterRequest, context: Any
    ) -> cluster_pb2.Cluster:
        c = self.core.create_cluster(principal(), request.cluster_id, list(request.environments))
        return convert.cluster(c)

    @mapped
    async def GetCluster(
        self, request: cluster_pb2.GetClusterRequest, context: Any
    ) -> cluster_pb2.Cluster:
        return convert.cluster(self.core.get_cluster(principal(), request.name))

    @mapped
    async def ListClusters(
        self, request: cluster_pb2.ListClustersRequest, context: Any
    ) -> cluster_pb2.ListClustersResponse:
        return cluster_pb2.ListClustersResponse(
            clusters=[convert.cluster(c) for c in self.core.list_clusters(principal())]
        )

    @mapped
    async def ListAgents(
        self, request: cluster_pb2.ListAgentsRequest, context: Any
    ) -> cluster_pb2.ListAgentsResponse:
        agents = self.core.list_agents(principal(), request.cluster)
        return cluster_pb2.ListAgentsResponse(agents=[convert.agent(a) for a in agents])


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """One stream per agent: a reader task feeds reports to the core while this coroutine
    writes the session's outbox (assignments, cancels, revokes) to the agent."""

    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        who = principal()
        try:
            first = await asyncio.wait_for(anext(aiter(request_iterator)), HELLO_TIMEOUT)
        except (StopAsyncIteration, TimeoutError):
            raise InvalidArgument("hello", "send Hello as the first message") from None
        if first.WhichOneof("msg") != "hello":
            raise InvalidArgument("hello", "the first message must be Hello")
        hello = first.hello
        session, resumed = self.core.agent_connect(
            who,
            hello.agent_id,
            hello.version,
            hello.capabilities,
            convert.held(hello.held_leases),
        )
        try:
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
            reader = asyncio.create_task(self._read(session, request_iterator))
            try:
                while True:
                    cmd = await session.outbox.get()
                    if isinstance(cmd, CloseCommand):
                        if cmd.fatal is not None:
                            raise cmd.fatal  # the token was revoked or expired
                        break
                    msg = convert.command(cmd)
                    if msg is not None:
                        await context.write(msg)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            self.core.agent_disconnect(session)

    async def _read(self, session: AgentSession, request_iterator: Any) -> None:
        try:
            async for msg in request_iterator:
                self._handle(session, msg)
        except (PermissionDenied, Unauthenticated) as exc:
            session.outbox.put_nowait(CloseCommand(exc.message))
            raise
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            session.send(CloseCommand("the agent closed the stream"))

    def _handle(self, s: AgentSession, msg: agent_pb2.AgentMessage) -> None:
        kind = msg.WhichOneof("msg")
        try:
            if kind == "ack":
                a = msg.ack
                self.core.agent_ack(s, a.deployment_id, a.lease_id, a.epoch)
            elif kind == "progress":
                p = msg.progress
                self.core.agent_progress(
                    s, p.deployment_id, p.lease_id, p.epoch, p.sequence, p.phase, p.message
                )
            elif kind == "result":
                r = msg.result
                self.core.agent_result(s, r.deployment_id, r.lease_id, r.epoch, r.outcome, r.reason)
            elif kind == "heartbeat":
                self.core.agent_heartbeat(s, convert.held(msg.heartbeat.leases))
            elif kind == "inventory":
                self.core.agent_inventory(s, convert.preview_stacks(msg.inventory.stacks))
            elif kind == "cron_run":
                cron.handle_report(self.core, s, msg.cron_run)
        except (PermissionDenied, Unauthenticated):
            raise
        except DomainError as exc:
            # One bad report must not cost the agent its stream (and its other leases).
            log.warning("agent_report_invalid", agent_id=s.agent_id, kind=kind, error=exc.message)


class TokenServicer(admin_pb2_grpc.TokenServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: Any
    ) -> admin_pb2.CreateTokenResponse:
        issued = self.core.create_token(principal(), convert.token_input(request))
        return admin_pb2.CreateTokenResponse(
            token=convert.token(issued.record), secret=issued.plaintext
        )

    @mapped
    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: Any
    ) -> admin_pb2.ListTokensResponse:
        rows = self.core.list_tokens(principal(), request.include_revoked)
        return admin_pb2.ListTokensResponse(tokens=[convert.token(t) for t in rows])

    @mapped
    async def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: Any
    ) -> admin_pb2.Token:
        return convert.token(self.core.revoke_token(principal(), request.name))


class AuditServicer(admin_pb2_grpc.AuditServiceServicer):
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    @mapped
    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: Any
    ) -> admin_pb2.ListAuditResponse:
        since = convert.seconds(request.since) if request.HasField("since") else 0.0
        rows, nxt = self.core.list_audit(
            principal(), since, request.service, request.page_size, request.page_token
        )
        return admin_pb2.ListAuditResponse(
            entries=[convert.audit_entry(e) for e in rows], next_page_token=nxt
        )

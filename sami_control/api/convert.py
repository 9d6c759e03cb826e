"""Core model ↔ sami.v1 protobuf."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from sami_common import limits
from sami_control.api.pb import (
    admin_pb2,
    agent_pb2,
    artifact_pb2,
    cluster_pb2,
    deployment_pb2,
    manifest_pb2,
    query_pb2,
    secret_pb2,
)
from sami_control.core.commands import (
    AssignCommand,
    CancelCommand,
    CloseCommand,
    Command,
    CronRunAckCommand,
    DoneCommand,
    HeartbeatAckCommand,
    HeldLease,
    LogsAsk,
    PlanAsk,
    QueryCancelCommand,
    QueryCommand,
    RevokeCommand,
)
from sami_control.core.manifest_catalog import ManifestFile
from sami_control.core.model import (
    AgentRecord,
    Artifact,
    AuditEntry,
    Cluster,
    Deployment,
    Event,
    LiveServiceState,
    ManifestRevision,
    PreviewStack,
    Role,
    SecretVersion,
    TokenRecord,
)
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.tokens import TokenInput

ROLES: dict[admin_pb2.TokenRole, Role] = {
    admin_pb2.TOKEN_ROLE_ADMIN: Role.ADMIN,
    admin_pb2.TOKEN_ROLE_AGENT: Role.AGENT,
    admin_pb2.TOKEN_ROLE_DEPLOYER: Role.DEPLOYER,
    admin_pb2.TOKEN_ROLE_READER: Role.READER,
}
ROLE_VALUES = {r: v for v, r in ROLES.items()}


def ts(t: float) -> timestamp_pb2.Timestamp | None:
    if not t:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


# The same answer to every heartbeat: built once (never modified; only serialized).
_HEARTBEAT_ACK = agent_pb2.ControlMessage(heartbeat_ack=agent_pb2.HeartbeatAck())


def dur(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def artifact(a: Artifact) -> artifact_pb2.Artifact:
    return artifact_pb2.Artifact(
        name=f"artifacts/{a.id}",
        id=a.id,
        artifact_name=a.artifact_name,
        kind=int(a.kind),  # type: ignore[arg-type]
        ref=a.ref,
        digest=a.digest,
        tags=a.tags,
        provenance=artifact_pb2.Provenance(
            git_repo=a.git_repo, git_commit=a.git_commit, ci_run_url=a.ci_run_url
        ),
        labels=a.labels,
        create_time=ts(a.created_at),
        created_by=a.created_by,
    )


def artifact_input(a: artifact_pb2.Artifact) -> ArtifactInput:
    return ArtifactInput(
        artifact_name=a.artifact_name,
        kind=a.kind or artifact_pb2.ARTIFACT_KIND_IMAGE,
        ref=a.ref,
        digest=a.digest,
        tags=list(a.tags),
        git_repo=a.provenance.git_repo,
        git_commit=a.provenance.git_commit,
        ci_run_url=a.provenance.ci_run_url,
        labels=dict(a.labels),
    )


def deployment(d: Deployment, art: Artifact | None) -> deployment_pb2.Deployment:
    return deployment_pb2.Deployment(
        name=f"deployments/{d.id}",
        id=d.id,
        service=d.service,
        environment=d.environment,
        pull_request=d.pull_request,
        artifact=artifact(art) if art else None,
        reason=d.reason,
        request_id=d.request_id,
        state=int(d.state),  # type: ignore[arg-type]
        status_message=d.status_message,
        cluster=d.cluster,
        agent_id=d.agent_id,
        attempt=d.attempt,
        epoch=d.epoch,
        last_sequence=d.last_sequence,
        cancel_requested=d.cancel_requested,
        deployment_type=d.deployment_type,
        stack_name=d.stack_name,
        manifest_revision=d.manifest_revision,
        action=int(d.action),  # type: ignore[arg-type]
        rollback_of=d.rollback_of,
        secrets=[secret_pb2.SecretRef(name=n, version=v) for n, v in sorted(d.secrets.items())],
        variables=d.variables,
        created_by=d.created_by,
        create_time=ts(d.created_at),
        update_time=ts(d.updated_at),
        finish_time=ts(d.finished_at),
    )


def deployment_input(r: deployment_pb2.CreateDeploymentRequest) -> DeploymentInput:
    return DeploymentInput(
        service=r.service,
        environment=r.environment,
        artifact=r.artifact,
        pull_request=r.pull_request,
        reason=r.reason,
        request_id=r.request_id,
        deployment_type=r.deployment_type,
        rollback_of=r.rollback_of,
        force=r.force,
    )


def event(e: Event) -> deployment_pb2.DeploymentEvent:
    return deployment_pb2.DeploymentEvent(
        deployment_id=e.deployment_id,
        sequence=e.sequence,
        type=int(e.type),  # type: ignore[arg-type]
        state=int(e.state),  # type: ignore[arg-type]
        phase=e.phase,
        message=e.message,
        agent_id=e.agent_id,
        attempt=e.attempt,
        time=ts(e.time),
    )


def cluster(c: Cluster) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=f"clusters/{c.id}",
        cluster_id=c.id,
        environments=c.environments,
        create_time=ts(c.created_at),
    )


def agent(a: AgentRecord) -> cluster_pb2.Agent:
    return cluster_pb2.Agent(
        agent_id=a.agent_id,
        cluster=a.cluster,
        version=a.version,
        capabilities=a.capabilities,
        connected=a.connected,
        connect_time=ts(a.connected_at),
        last_heartbeat_time=ts(a.last_seen_at),
        leases=a.leases,
    )


def preview_stacks(stacks: object) -> list[PreviewStack]:
    return [
        PreviewStack(s.stack_name, s.service, s.pull_request, s.deployment_id)
        for s in stacks  # type: ignore[attr-defined]
    ]


# What is kept of each text field of a LiveService (Docker's own values are far shorter; a
# row is stored and shown, so a broken or hostile agent cannot make it large).
_LIVE_TEXT = limits.MAX_LIVE_TEXT


def live_services(services: object) -> list[LiveServiceState]:
    """An agent's LiveStatus services; the cluster and the target are the core's to fill."""
    return [
        LiveServiceState(
            cluster="",
            stack_name=s.stack_name[:_LIVE_TEXT],
            swarm_service=s.service[:_LIVE_TEXT],
            service="",
            environment="",
            pull_request=0,
            deployment_id=s.deployment_id[:_LIVE_TEXT],
            label_digest=s.label_digest[:_LIVE_TEXT],
            image=s.image[:_LIVE_TEXT],
            desired_replicas=s.desired_replicas,
            running_replicas=s.running_replicas,
            unhealthy_tasks=s.unhealthy_tasks,
            update_state=s.update_state[:_LIVE_TEXT],
            update_message=s.update_message[:_LIVE_TEXT],
            change_time=s.change_time.ToNanoseconds() / 1e9 if s.HasField("change_time") else 0.0,
            outside_change=s.outside_change[:_LIVE_TEXT],
            removed=s.removed,
            reported_at=0.0,
        )
        for s in services  # type: ignore[attr-defined]
    ]


def held(leases: object) -> list[HeldLease]:
    return [
        HeldLease(h.deployment_id, h.lease_id, h.epoch)
        for h in leases  # type: ignore[attr-defined]
    ]


def command(cmd: Command) -> agent_pb2.ControlMessage | None:
    match cmd:
        case AssignCommand(deployment=d, artifact=art, lease_ttl=ttl, files=files, secrets=ss):
            return agent_pb2.ControlMessage(
                assignment=agent_pb2.Assignment(
                    lease_id=d.lease_id,
                    deployment=deployment(d, art),
                    files=files,
                    lease_ttl=dur(ttl),
                    manifest=assigned_manifest(d),
                    secrets=[secret_payload(v) for v in ss],
                )
            )
        case CancelCommand(deployment_id=i, lease_id=lease, reason=r):
            return agent_pb2.ControlMessage(
                cancel=agent_pb2.Cancel(deployment_id=i, lease_id=lease, reason=r)
            )
        case RevokeCommand(deployment_id=i, lease_id=lease, reason=r):
            return agent_pb2.ControlMessage(
                revoke=agent_pb2.Revoke(deployment_id=i, lease_id=lease, reason=r)
            )
        case HeartbeatAckCommand():
            return _HEARTBEAT_ACK
        case DoneCommand(deployment_id=i, lease_id=lease):
            return agent_pb2.ControlMessage(done=agent_pb2.Done(deployment_id=i, lease_id=lease))
        case CronRunAckCommand(run_id=run_id, error=error):
            return agent_pb2.ControlMessage(
                cron_run_ack=agent_pb2.CronRunAck(run_id=run_id, error=error)
            )
        case QueryCommand():
            return agent_pb2.ControlMessage(query=query(cmd))
        case QueryCancelCommand(query_id=i, reason=r):
            return agent_pb2.ControlMessage(
                query_cancel=query_pb2.QueryCancel(id=i, reason=r[:500])
            )
        case CloseCommand():
            return None
    raise AssertionError(f"unknown command {cmd!r}")


def secret_payload(v: SecretVersion) -> secret_pb2.SecretPayload:
    return secret_pb2.SecretPayload(name=v.name, version=v.version, ciphertext=v.ciphertext)


def assigned_manifest(d: Deployment) -> manifest_pb2.ManifestEntry:
    """The resolved manifest an assignment (or a plan) of `d` carries."""
    return manifest_pb2.ManifestEntry(
        service=d.service,
        deployment_type=d.deployment_type,
        environment=d.environment,
        folder=d.manifest_folder + "/" if d.manifest_folder else "",
        pr_deploy=d.manifest_settings.pr_deploy,
        stack_files=d.stack_files,
        image_services=d.image_services,
        converge_timeout_seconds=int(d.converge_timeout),
        stack_name=d.stack_name,
        static_target_dir=d.manifest_settings.static_target_dir,
        keep_releases=d.manifest_settings.keep_releases,
        cron_schedule=d.manifest_settings.cron_schedule,
    )


def query(cmd: QueryCommand) -> query_pb2.Query:
    out = query_pb2.Query(
        id=cmd.query_id,
        max_lines=cmd.limits.max_lines,
        max_bytes=cmd.limits.max_bytes,
        lines_per_second=cmd.limits.lines_per_second,
    )
    ask = cmd.ask
    if isinstance(ask, LogsAsk):
        out.logs.CopyFrom(
            query_pb2.LogsQuery(
                stack_name=ask.stack_name,
                service=ask.service,
                since=dur(ask.since) if ask.since is not None else None,
                tail=ask.tail,
                follow=ask.follow,
            )
        )
    else:
        assert isinstance(ask, PlanAsk)
        out.plan.CopyFrom(
            query_pb2.PlanQuery(
                deployment=deployment(ask.deployment, ask.artifact),
                files=ask.files,
                manifest=assigned_manifest(ask.deployment),
            )
        )
    return out


def manifest_revision(
    rev: ManifestRevision, current: bool, files: Sequence[ManifestFile] = ()
) -> manifest_pb2.ManifestRevision:
    return manifest_pb2.ManifestRevision(
        name=f"manifestRevisions/{rev.id}",
        id=rev.id,
        commit=rev.commit,
        entries=[manifest_pb2.ManifestEntry(**e) for e in rev.entries],  # type: ignore[arg-type]
        warnings=[
            manifest_pb2.ManifestProblem(
                severity=str(w.get("severity", "")),
                file=str(w.get("file", "")),
                line=int(w.get("line", 0)),  # type: ignore[call-overload]
                message=str(w.get("message", "")),
                hint=str(w.get("hint", "")),
                code=str(w.get("code", "")),
            )
            for w in rev.warnings
        ],
        files=[
            manifest_pb2.ManifestFile(
                path=f.path, sha256=f.sha256, size=f.size, content=f.content or b""
            )
            for f in files
        ],
        file_count=rev.file_count,
        create_time=ts(rev.created_at),
        created_by=rev.created_by,
        current=current,
    )


def seconds(t: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    return t.seconds + t.nanos / 1e9


def token(t: TokenRecord) -> admin_pb2.Token:
    return admin_pb2.Token(
        name=f"tokens/{t.id}",
        id=t.id,
        display_name=t.name,
        role=ROLE_VALUES[t.role],
        cluster=t.cluster,
        services=t.services,
        environments=t.environments,
        create_time=ts(t.created_at),
        expire_time=ts(t.expires_at),
        revoke_time=ts(t.revoked_at),
        created_by=t.created_by,
    )


def token_input(r: admin_pb2.CreateTokenRequest) -> TokenInput:
    role = ROLES.get(r.role)
    return TokenInput(
        role=role.value if role else f"role #{r.role}" if r.role else "",
        name=r.display_name,
        cluster=r.cluster,
        services=list(r.services),
        environments=list(r.environments),
        expires_in=seconds(r.expires_in) if r.HasField("expires_in") else 0.0,
    )


def audit_entry(e: AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        sequence=e.seq,
        time=ts(e.time),
        token_id=e.token_id,
        token_name=e.token_name,
        action=e.action,
        target=e.target,
        outcome=e.outcome,
        detail=e.detail,
        peer=e.peer,
        request_id=e.request_id,
        service=e.service,
    )

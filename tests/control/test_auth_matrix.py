"""Every role against every RPC, over a real socket: who may do what is the contract that
keeps a CI token for one service away from production."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import grpc
import pyrage
import pytest

from sami.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    cron_pb2,
    cron_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    lock_pb2,
    lock_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from sami_control import offline
from sami_control.core.model import AgentRecord
from tests import samples
from tests.control.conftest import LiveServer

REF = "127.0.0.1:5000/web@sha256:" + "a" * 64
DOWN = "http://127.0.0.1:9/hook"
OK, DENIED, UNAUTH = "OK", "PERMISSION_DENIED", "UNAUTHENTICATED"
_n = itertools.count()


class Ctx:
    def __init__(self, srv: LiveServer) -> None:
        self.srv = srv
        self.ch = grpc.insecure_channel(srv.addr)
        offline.add_cluster(srv.data, "c1", ["stage", "production"])
        self.admin = srv.token("admin")
        # Deployments waiting for approval are requested by a token of its own: nobody in
        # the matrix is their requester (who may not approve them).
        self.requester = offline.add_token(srv.data, "admin", "requester").plaintext
        self.art = artifact_pb2_grpc.ArtifactServiceStub(self.ch)
        self.dep = deployment_pb2_grpc.DeploymentServiceStub(self.ch)
        self.clu = cluster_pb2_grpc.ClusterServiceStub(self.ch)
        self.agent = agent_pb2_grpc.AgentServiceStub(self.ch)
        self.man = manifest_pb2_grpc.ManifestServiceStub(self.ch)
        self.cron = cron_pb2_grpc.CronServiceStub(self.ch)
        self.locks = lock_pb2_grpc.LockServiceStub(self.ch)
        self.notify = notify_pb2_grpc.NotificationServiceStub(self.ch)
        # Nothing listens on port 9: TestTarget answers that it could not connect.
        self.notify.CreateTarget(
            notify_pb2.CreateTargetRequest(name="sample", kind="generic", url=DOWN),
            metadata=self.md(self.admin),
        )
        self.status = status_pb2_grpc.StatusServiceStub(self.ch)
        self.secrets = secret_pb2_grpc.SecretServiceStub(self.ch)
        # c1's one recipient: what every secret of stage and production is encrypted to.
        self.key = pyrage.x25519.Identity.generate()
        self.secrets.AddRecipient(
            secret_pb2.AddRecipientRequest(cluster="c1", recipient=str(self.key.to_public())),
            metadata=self.md(self.admin),
        )
        self.query = query_pb2_grpc.QueryServiceStub(self.ch)
        self.man.SyncManifests(sync_request(), metadata=self.md(self.admin))
        self.artifact_id = self.art.RegisterArtifact(
            artifact_pb2.RegisterArtifactRequest(
                artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
            ),
            metadata=self.md(self.admin),
        ).artifact.id

    @staticmethod
    def md(token: str | None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),) if token else ()

    def gone_agent(self) -> str:
        """The id of an agent of c1 the store remembers, not connected."""
        agent_id = f"gone-{next(_n)}"

        async def put() -> None:
            async with self.srv.server.core.store.tx() as tx:
                await tx.upsert_agent(AgentRecord(agent_id, "c1"))

        asyncio.run_coroutine_threadsafe(put(), self.srv.loop).result(10)
        return agent_id

    def target_and_remove(self, md: tuple[tuple[str, str], ...]) -> object:
        name = f"hook-{next(_n)}"
        self.notify.CreateTarget(
            notify_pb2.CreateTargetRequest(name=name, kind="generic", url=DOWN), metadata=md
        )
        return self.notify.DeleteTarget(notify_pb2.DeleteTargetRequest(name=name), metadata=md)

    def lock_and_unlock(self, service: str, env: str, md: tuple[tuple[str, str], ...]) -> object:
        """Take a lock and release it with the same token (so later calls are not refused)."""
        self.locks.CreateLock(
            lock_pb2.CreateLockRequest(environment=env, service=service, reason="matrix"),
            metadata=md,
        )
        return self.locks.DeleteLock(
            lock_pb2.DeleteLockRequest(environment=env, service=service), metadata=md
        )

    def break_lock(self, md: tuple[tuple[str, str], ...]) -> object:
        """Remove a lock an admin took on a service of its own (only an admin may)."""
        service = f"held{next(_n)}"
        self.locks.CreateLock(
            lock_pb2.CreateLockRequest(environment="stage", service=service, reason="mine"),
            metadata=self.md(self.admin),
        )
        return self.locks.DeleteLock(
            lock_pb2.DeleteLockRequest(environment="stage", service=service), metadata=md
        )

    def set_secret(
        self, service: str, env: str, md: tuple[tuple[str, str], ...], name: str = ""
    ) -> secret_pb2.Secret:
        got = self.secrets.GetRecipients(
            secret_pb2.GetRecipientsRequest(service=service, environment=env),
            metadata=self.md(self.admin),
        )
        ciphertext = pyrage.encrypt(
            b"hunter2", [pyrage.x25519.Recipient.from_str(r) for r in got.recipients]
        )
        return self.secrets.SetSecret(  # type: ignore[no-any-return]
            secret_pb2.SetSecretRequest(
                service=service,
                environment=env,
                name=name or f"s{next(_n)}",
                ciphertext=ciphertext,
                recipients_digest=got.recipients_digest,
            ),
            metadata=md,
        )

    def remove_secret(self, env: str, md: tuple[tuple[str, str], ...]) -> object:
        """Remove a secret an admin set (so that there is one to remove)."""
        s = self.set_secret("web", env, self.md(self.admin))
        return self.secrets.RemoveSecret(
            secret_pb2.RemoveSecretRequest(service="web", environment=env, name=s.name),
            metadata=md,
        )

    def variable_and_remove(self, env: str, md: tuple[tuple[str, str], ...]) -> object:
        name = f"V{next(_n)}"
        self.secrets.SetVariable(
            secret_pb2.SetVariableRequest(service="web", environment=env, name=name, value="1"),
            metadata=md,
        )
        return self.secrets.RemoveVariable(
            secret_pb2.RemoveVariableRequest(service="web", environment=env, name=name),
            metadata=md,
        )

    def recipient_and_remove(self, md: tuple[tuple[str, str], ...]) -> object:
        r = str(pyrage.x25519.Identity.generate().to_public())
        self.secrets.AddRecipient(
            secret_pb2.AddRecipientRequest(cluster="c1", recipient=r), metadata=md
        )
        return self.secrets.RemoveRecipient(
            secret_pb2.RemoveRecipientRequest(cluster="c1", recipient=r), metadata=md
        )

    def awaiting(self, env: str) -> str:
        """A deployment of web (whose manifests say approval: required) awaiting approval."""
        return self.dep.CreateDeployment(
            deployment_pb2.CreateDeploymentRequest(
                service="web", environment=env, artifact=self.artifact_id
            ),
            metadata=self.md(self.requester),
        ).id

    def queued(self, service: str = "web", env: str = "stage") -> str:
        return self.dep.CreateDeployment(
            deployment_pb2.CreateDeploymentRequest(
                service=service, environment=env, artifact=self.artifact_id
            ),
            metadata=self.md(self.admin),
        ).id


def sync_request(extra: str = "") -> manifest_pb2.SyncManifestsRequest:
    files = samples.repo()
    for env in ("stage", "production"):  # ApproveDeployment and RejectDeployment need it
        files[f"services/web/swarm/{env}/sami.yaml"] += b"approval: required\n"
    if extra:
        files["README.md"] = extra.encode()
    return manifest_pb2.SyncManifestsRequest(
        files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
    )


Call = Callable[[Ctx, tuple[tuple[str, str], ...]], object]


def _past_authorization(call: Callable[[], object]) -> object:
    """Logs and plans need a connected agent, and none is: a caller who may ask gets
    UNAVAILABLE (no agent), one who may not gets PERMISSION_DENIED before that."""
    try:
        return call()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE and "no agent of cluster" in (e.details() or ""):
            return None
        raise


def _logs(c: Ctx, md: tuple[tuple[str, str], ...], env: str) -> object:
    request = query_pb2.ServiceLogsRequest(service="web", environment=env, tail=5)
    return _past_authorization(lambda: list(c.query.ServiceLogs(request, metadata=md, timeout=5)))


def _plan(c: Ctx, md: tuple[tuple[str, str], ...], env: str) -> object:
    request = query_pb2.PlanDeploymentRequest(
        service="web", environment=env, artifact=c.artifact_id
    )
    return _past_authorization(lambda: c.query.PlanDeployment(request, metadata=md, timeout=5))


def _connect(c: Ctx, md: tuple[tuple[str, str], ...]) -> object:
    hello = agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id=f"a{next(_n)}"))

    def messages():  # type: ignore[no-untyped-def]
        yield hello
        time.sleep(0.5)

    stream = c.agent.Connect(messages(), metadata=md, timeout=5)
    first = next(iter(stream))
    assert first.WhichOneof("msg") == "welcome"
    stream.cancel()
    return first


RPCS: dict[str, Call] = {
    "RegisterArtifact": lambda c, md: c.art.RegisterArtifact(
        artifact_pb2.RegisterArtifactRequest(
            artifact=artifact_pb2.Artifact(artifact_name="web", ref=f"r/web@sha256:{next(_n):064x}")
        ),
        metadata=md,
    ),
    "GetArtifact": lambda c, md: c.art.GetArtifact(
        artifact_pb2.GetArtifactRequest(name=c.artifact_id), metadata=md
    ),
    "ListArtifacts": lambda c, md: c.art.ListArtifacts(
        artifact_pb2.ListArtifactsRequest(), metadata=md
    ),
    "CreateDeployment(web,stage)": lambda c, md: c.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="web", environment="stage", artifact=c.artifact_id
        ),
        metadata=md,
    ),
    "CreateDeployment(web,production)": lambda c, md: c.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="web", environment="production", artifact=c.artifact_id
        ),
        metadata=md,
    ),
    "CreateDeployment(api,stage)": lambda c, md: c.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="api", environment="stage", artifact=c.artifact_id
        ),
        metadata=md,
    ),
    "GetDeployment": lambda c, md: c.dep.GetDeployment(
        deployment_pb2.GetDeploymentRequest(name=c.queued()), metadata=md
    ),
    "ListDeployments": lambda c, md: c.dep.ListDeployments(
        deployment_pb2.ListDeploymentsRequest(), metadata=md
    ),
    "WatchDeployment": lambda c, md: next(
        iter(
            c.dep.WatchDeployment(
                deployment_pb2.WatchDeploymentRequest(name=c.queued()), metadata=md, timeout=5
            )
        )
    ),
    "CancelDeployment(web,stage)": lambda c, md: c.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=c.queued()), metadata=md
    ),
    "CancelDeployment(web,production)": lambda c, md: c.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=c.queued(env="production")), metadata=md
    ),
    "ApproveDeployment(web,stage)": lambda c, md: c.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name=c.awaiting("stage")), metadata=md
    ),
    "ApproveDeployment(web,production)": lambda c, md: c.dep.ApproveDeployment(
        deployment_pb2.ApproveDeploymentRequest(name=c.awaiting("production")), metadata=md
    ),
    "RejectDeployment(web,stage)": lambda c, md: c.dep.RejectDeployment(
        deployment_pb2.RejectDeploymentRequest(name=c.awaiting("stage"), reason="no"),
        metadata=md,
    ),
    "RejectDeployment(web,production)": lambda c, md: c.dep.RejectDeployment(
        deployment_pb2.RejectDeploymentRequest(name=c.awaiting("production"), reason="no"),
        metadata=md,
    ),
    "CreateCluster": lambda c, md: c.clu.CreateCluster(
        cluster_pb2.CreateClusterRequest(cluster_id=f"k{next(_n)}", environments=["pull_request"]),
        metadata=md,
    ),
    "UpdateCluster": lambda c, md: c.clu.UpdateCluster(
        cluster_pb2.UpdateClusterRequest(name="c1", environments=["stage", "production"]),
        metadata=md,
    ),
    "GetCluster": lambda c, md: c.clu.GetCluster(
        cluster_pb2.GetClusterRequest(name="c1"), metadata=md
    ),
    "ListClusters": lambda c, md: c.clu.ListClusters(
        cluster_pb2.ListClustersRequest(), metadata=md
    ),
    "ListAgents": lambda c, md: c.clu.ListAgents(cluster_pb2.ListAgentsRequest(), metadata=md),
    "RemoveAgent": lambda c, md: c.clu.RemoveAgent(
        cluster_pb2.RemoveAgentRequest(cluster="c1", agent_id=c.gone_agent()), metadata=md
    ),
    "SyncManifests": lambda c, md: c.man.SyncManifests(sync_request(f"{next(_n)}"), metadata=md),
    "GetManifestRevision": lambda c, md: c.man.GetManifestRevision(
        manifest_pb2.GetManifestRevisionRequest(name="current"), metadata=md
    ),
    "ListManifestRevisions": lambda c, md: c.man.ListManifestRevisions(
        manifest_pb2.ListManifestRevisionsRequest(), metadata=md
    ),
    "ListCronRuns": lambda c, md: c.cron.ListCronRuns(cron_pb2.ListCronRunsRequest(), metadata=md),
    "CreateLock+DeleteLock(web,stage)": lambda c, md: c.lock_and_unlock("web", "stage", md),
    "CreateLock+DeleteLock(*,production)": lambda c, md: c.lock_and_unlock("", "production", md),
    "DeleteLock(another's)": lambda c, md: c.break_lock(md),
    "ListLocks": lambda c, md: c.locks.ListLocks(lock_pb2.ListLocksRequest(), metadata=md),
    "CreateTarget+DeleteTarget": lambda c, md: c.target_and_remove(md),
    "ListTargets": lambda c, md: c.notify.ListTargets(notify_pb2.ListTargetsRequest(), metadata=md),
    "TestTarget": lambda c, md: c.notify.TestTarget(
        notify_pb2.TestTargetRequest(name="sample"), metadata=md
    ),
    "ListDeliveries": lambda c, md: c.notify.ListDeliveries(
        notify_pb2.ListDeliveriesRequest(), metadata=md
    ),
    "GetStatus": lambda c, md: c.status.GetStatus(status_pb2.GetStatusRequest(), metadata=md),
    "WatchStatus": lambda c, md: next(
        iter(c.status.WatchStatus(status_pb2.GetStatusRequest(), metadata=md, timeout=5))
    ),
    "AgentService.Connect": _connect,
    "GetRecipients(web,stage)": lambda c, md: c.secrets.GetRecipients(
        secret_pb2.GetRecipientsRequest(service="web", environment="stage"), metadata=md
    ),
    "GetRecipients(web,production)": lambda c, md: c.secrets.GetRecipients(
        secret_pb2.GetRecipientsRequest(service="web", environment="production"), metadata=md
    ),
    "SetSecret(web,stage)": lambda c, md: c.set_secret("web", "stage", md),
    "SetSecret(web,production)": lambda c, md: c.set_secret("web", "production", md),
    "SetSecret(api,stage)": lambda c, md: c.set_secret("api", "stage", md),
    "RemoveSecret(web,stage)": lambda c, md: c.remove_secret("stage", md),
    "RemoveSecret(web,production)": lambda c, md: c.remove_secret("production", md),
    "ExportSecrets(web,stage)": lambda c, md: c.secrets.ExportSecrets(
        secret_pb2.ExportSecretsRequest(service="web", environment="stage"), metadata=md
    ),
    "ExportSecrets(web,production)": lambda c, md: c.secrets.ExportSecrets(
        secret_pb2.ExportSecretsRequest(service="web", environment="production"), metadata=md
    ),
    "ListSecrets": lambda c, md: c.secrets.ListSecrets(
        secret_pb2.ListSecretsRequest(), metadata=md
    ),
    "SetVariable+RemoveVariable(web,stage)": lambda c, md: c.variable_and_remove("stage", md),
    "SetVariable+RemoveVariable(web,production)": lambda c, md: c.variable_and_remove(
        "production", md
    ),
    "ListVariables": lambda c, md: c.secrets.ListVariables(
        secret_pb2.ListVariablesRequest(), metadata=md
    ),
    "ListRecipients": lambda c, md: c.secrets.ListRecipients(
        secret_pb2.ListRecipientsRequest(), metadata=md
    ),
    "AddRecipient+RemoveRecipient": lambda c, md: c.recipient_and_remove(md),
    "ServiceLogs(web,stage)": lambda c, md: _logs(c, md, "stage"),
    "ServiceLogs(web,production)": lambda c, md: _logs(c, md, "production"),
    "PlanDeployment(web,stage)": lambda c, md: _plan(c, md, "stage"),
    "PlanDeployment(web,production)": lambda c, md: _plan(c, md, "production"),
}

READ = {
    "GetArtifact",
    "ListArtifacts",
    "GetDeployment",
    "ListDeployments",
    "WatchDeployment",
    "GetCluster",
    "ListClusters",
    "ListAgents",
    "GetManifestRevision",
    "ListManifestRevisions",
    "ListCronRuns",
    "ListLocks",
    "GetStatus",
    "WatchStatus",
    # Names and versions of secrets, and variables (which are not secret).
    "ListSecrets",
    "ListVariables",
}
DEPLOY_ALL = {
    "RegisterArtifact",
    "GetRecipients(web,stage)",
    "GetRecipients(web,production)",
    "SetSecret(web,stage)",
    "SetSecret(web,production)",
    "SetSecret(api,stage)",
    "RemoveSecret(web,stage)",
    "RemoveSecret(web,production)",
    "ExportSecrets(web,stage)",
    "ExportSecrets(web,production)",
    "SetVariable+RemoveVariable(web,stage)",
    "SetVariable+RemoveVariable(web,production)",
    "CreateDeployment(web,stage)",
    "CreateDeployment(api,stage)",
    "CreateDeployment(web,production)",
    "CancelDeployment(web,stage)",
    "CancelDeployment(web,production)",
    "ApproveDeployment(web,stage)",
    "ApproveDeployment(web,production)",
    "RejectDeployment(web,stage)",
    "RejectDeployment(web,production)",
    "CreateLock+DeleteLock(web,stage)",
    "CreateLock+DeleteLock(*,production)",
    "ServiceLogs(web,stage)",
    "ServiceLogs(web,production)",
    "PlanDeployment(web,stage)",
    "PlanDeployment(web,production)",
}
# What each role may do; every other RPC must be refused.
ALLOWED: dict[str, set[str]] = {
    "admin": set(RPCS) - {"AgentService.Connect"},
    "deployer(web,stage)": READ
    | {
        "RegisterArtifact",
        "CreateDeployment(web,stage)",
        "CancelDeployment(web,stage)",
        "ApproveDeployment(web,stage)",
        "RejectDeployment(web,stage)",
        "CreateLock+DeleteLock(web,stage)",
        # Logs can hold secrets: whoever may deploy the service there, not every reader.
        "ServiceLogs(web,stage)",
        "PlanDeployment(web,stage)",
        # Secrets and variables: whoever may deploy the service there.
        "GetRecipients(web,stage)",
        "SetSecret(web,stage)",
        "RemoveSecret(web,stage)",
        "ExportSecrets(web,stage)",
        "SetVariable+RemoveVariable(web,stage)",
    },
    # Only an unscoped deployer may sync: a revision holds every service's manifests.
    "deployer(any)": READ | DEPLOY_ALL | {"SyncManifests"},
    "reader": READ,
    "agent(c1)": {"AgentService.Connect"},
}


def tokens(srv: LiveServer) -> dict[str, str | None]:
    revoked = offline.add_token(srv.data, "admin", "gone")
    offline.revoke_token(srv.data, revoked.record.id)
    expired = offline.add_token(srv.data, "admin", "old", expires_in="1")
    time.sleep(1.1)
    return {
        "admin": srv.token("admin"),
        "deployer(web,stage)": srv.token("deployer", services=["web"], environments=["stage"]),
        "deployer(any)": srv.token("deployer"),
        "reader": srv.token("reader"),
        "agent(c1)": srv.token("agent", cluster="c1"),
        "no token": None,
        "forged": "sami_000000000000_" + "x" * 43,
        "garbage": "not-a-token",
        "revoked": revoked.plaintext,
        "expired": expired.plaintext,
    }


def test_every_role_against_every_rpc(live_server: LiveServer) -> None:
    c = Ctx(live_server)
    table: dict[tuple[str, str], str] = {}
    for role, token in tokens(live_server).items():
        for rpc, call in RPCS.items():
            try:
                call(c, c.md(token))
                table[(role, rpc)] = OK
            except grpc.RpcError as e:
                table[(role, rpc)] = e.code().name
    wrong = []
    for (role, rpc), got in table.items():
        if role in ALLOWED:
            want = OK if rpc in ALLOWED[role] else DENIED
        else:
            want = UNAUTH
        if got != want:
            wrong.append(f"{role} x {rpc}: got {got}, want {want}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "bearer  ", "x" * 300])
def test_malformed_authorization_headers(live_server: LiveServer, header: str) -> None:
    c = Ctx(live_server)
    with pytest.raises(grpc.RpcError) as ei:
        c.dep.ListDeployments(
            deployment_pb2.ListDeploymentsRequest(), metadata=(("authorization", header),)
        )
    assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_refusals_say_in_plain_words_what_the_role_may_not_do() -> None:
    from sami_control.core import authz
    from sami_control.core.authz import Action
    from sami_control.core.errors import PermissionDenied
    from sami_control.core.model import Principal, Role

    deployer = Principal("t1", "ci-web", Role.DEPLOYER)
    with pytest.raises(PermissionDenied) as refused:
        authz.require(deployer, Action.AGENT_CONNECT)
    assert "may not connect as an agent" in refused.value.message
    assert "--role agent --cluster" in refused.value.message
    reader = Principal("t2", "dash", Role.READER)
    with pytest.raises(PermissionDenied) as refused:
        authz.require(reader, Action.READ_AUDIT)
    assert "may not read the audit log; ask an admin" in refused.value.message
    assert set(authz.DOING) == set(Action)

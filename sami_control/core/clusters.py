"""Clusters (a swarm each, serving one or more environments) and the agents that serve them
as recorded in the store (the live sessions are core/agents.py's)."""

from __future__ import annotations

from sami_control.core import authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Cluster, Principal, State
from sami_control.core.store import Tx
from sami_manifests import ENVIRONMENTS


class Clusters:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("cluster.create", lambda self, who, cluster_id, envs: Subject(who, cluster_id))
    async def create(self, who: Principal, cluster_id: str, environments: list[str]) -> Cluster:
        """Shared by the RPC and the offline `sami-control cluster create`."""
        authz.require(who, Action.MANAGE_CLUSTERS)
        validation.name("cluster_id", cluster_id, "cluster name")
        envs = _environments(environments)
        async with self.ctx.store.tx() as tx:
            if await tx.get_cluster(cluster_id) is not None:
                raise AlreadyExists(f"cluster {cluster_id!r} already exists")
            await _check_not_served_elsewhere(tx, cluster_id, envs)
            c = Cluster(id=cluster_id, environments=envs, created_at=self.ctx.clock())
            await tx.insert_cluster(c)
            await self.audit.ok(tx, who, "cluster.create", cluster_id, detail=",".join(envs))
        return c

    @audited("cluster.update", lambda self, who, name, envs: Subject(who, name))
    async def update(self, who: Principal, name: str, environments: list[str]) -> Cluster:
        """Set every environment an existing cluster serves (e.g. give it pull_request)."""
        authz.require(who, Action.MANAGE_CLUSTERS)
        cluster_id = name.removeprefix("clusters/")
        validation.name("name", cluster_id, "cluster name")
        envs = _environments(environments)
        async with self.ctx.store.tx() as tx:
            c = await tx.get_cluster(cluster_id)
            if c is None:
                raise NotFound(
                    f"cluster {cluster_id!r} does not exist; `sami cluster list` shows them, "
                    f"`sami cluster create {cluster_id} --env ...` creates it"
                )
            await _check_not_served_elsewhere(tx, cluster_id, envs)
            dropped = sorted(set(c.environments) - set(envs))
            await _check_nothing_active(tx, cluster_id, dropped)
            await tx.set_cluster_environments(cluster_id, envs)
            updated = Cluster(id=cluster_id, environments=envs, created_at=c.created_at)
            await self.audit.ok(
                tx,
                who,
                "cluster.update",
                cluster_id,
                detail=f"{','.join(c.environments)} -> {','.join(envs)}",
            )
        return updated

    async def get(self, who: Principal, cluster_id: str) -> Cluster:
        authz.require(who, Action.READ)
        async with self.ctx.store.tx() as tx:
            c = await tx.get_cluster(cluster_id.removeprefix("clusters/"))
        if c is None:
            raise NotFound(f"cluster {cluster_id!r} does not exist; `sami cluster list` shows them")
        return c

    async def list(self, who: Principal) -> list[Cluster]:
        authz.require(who, Action.READ)
        async with self.ctx.store.tx() as tx:
            return await tx.list_clusters()


# Deployments a cluster's agents have yet to finish (a queued one is offered to them).
_UNFINISHED = (State.AWAITING_APPROVAL, State.QUEUED, State.ASSIGNED, State.IN_PROGRESS)


def _environments(environments: list[str]) -> list[str]:
    if not environments:
        raise InvalidArgument(
            "environments",
            f"name at least one environment the cluster serves ({', '.join(ENVIRONMENTS)})",
        )
    return sorted({validation.environment("environments", e) for e in environments})


async def _check_not_served_elsewhere(tx: Tx, cluster_id: str, environments: list[str]) -> None:
    for e in environments:
        other = await tx.cluster_for_environment(e)
        if other is not None and other != cluster_id:
            raise FailedPrecondition(
                f"environment {e!r} is already served by cluster {other!r}; an "
                f"environment is served by one cluster (drop it there first: "
                f"`sami cluster update {other} --env ...`)"
            )


async def _check_nothing_active(tx: Tx, cluster_id: str, dropped: list[str]) -> None:
    """A cluster keeps an environment while deployments to it there are not finished: its
    agents are the ones that will finish them."""
    if not dropped:
        return
    active = [
        d
        for d in await tx.deployments_in_states(_UNFINISHED, cluster_id)
        if d.environment in dropped
    ]
    if active:
        ids = ", ".join(d.id for d in active[:5])
        raise FailedPrecondition(
            f"cluster {cluster_id!r} still has unfinished deployments in "
            f"{', '.join(sorted({d.environment for d in active}))} ({ids}): wait for them to "
            "end, or cancel them, before the cluster stops serving it"
        )

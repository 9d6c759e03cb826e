"""Clusters (a swarm each, serving one or more environments) and the agents that serve them
as recorded in the store (the live sessions are core/agents.py's)."""

from __future__ import annotations

from sami_control.core import authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Cluster, Principal
from sami_manifests import ENVIRONMENTS


class Clusters:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("cluster.create", lambda self, who, cluster_id, envs: Subject(who, cluster_id))
    def create(self, who: Principal, cluster_id: str, environments: list[str]) -> Cluster:
        """Shared by the RPC and the offline `sami-control cluster create`."""
        authz.require(who, Action.MANAGE_CLUSTERS)
        validation.name("cluster_id", cluster_id, "cluster name")
        if not environments:
            raise InvalidArgument(
                "environments",
                f"name at least one environment the cluster serves ({', '.join(ENVIRONMENTS)})",
            )
        envs = sorted({validation.environment("environments", e) for e in environments})
        with self.ctx.store.tx() as tx:
            if tx.get_cluster(cluster_id) is not None:
                raise AlreadyExists(f"cluster {cluster_id!r} already exists")
            for e in envs:
                other = tx.cluster_for_environment(e)
                if other is not None:
                    raise FailedPrecondition(
                        f"environment {e!r} is already served by cluster {other!r}; an "
                        "environment is served by one cluster"
                    )
            c = Cluster(id=cluster_id, environments=envs, created_at=self.ctx.clock())
            tx.insert_cluster(c)
            self.audit.ok(tx, who, "cluster.create", cluster_id, detail=",".join(envs))
        return c

    def get(self, who: Principal, cluster_id: str) -> Cluster:
        authz.require(who, Action.READ)
        with self.ctx.store.tx() as tx:
            c = tx.get_cluster(cluster_id.removeprefix("clusters/"))
        if c is None:
            raise NotFound(f"cluster {cluster_id!r} does not exist; `sami cluster list` shows them")
        return c

    def list(self, who: Principal) -> list[Cluster]:
        authz.require(who, Action.READ)
        with self.ctx.store.tx() as tx:
            return tx.list_clusters()

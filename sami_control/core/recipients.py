"""A cluster's age recipients (docs/secrets.md): the public keys the secrets of the
environments it serves are encrypted to. Each agent sends its own in Hello (registered here,
`register_agent`, in the transaction that records its connection); an admin adds others by
hand (an escrow key for `sami secret rekey`) and removes a lost host's. The private keys
never reach the control plane.

Anyone holding an agent token of a cluster can register a recipient of that cluster: agent
tokens are as sensitive as the keys (SECURITY.md). Every new one is audited."""

from __future__ import annotations

from sami_control.core import age_files, authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import AlreadyExists, InvalidArgument, NotFound
from sami_control.core.model import Principal, Recipient
from sami_control.core.store import Tx

MAX_LABEL = 200


def check_recipient(field: str, value: str) -> str:
    problem = age_files.valid_recipient(value)
    if problem is not None:
        raise InvalidArgument(field, f"{value[:100]!r} {problem}")
    return value


def _subject(self: Recipients, who: Principal, cluster: str, recipient: str, *_: object) -> Subject:
    return Subject(who, f"{cluster}/{recipient[:100]}")


async def current(tx: Tx, cluster: str) -> list[str]:
    """The cluster's recipients now: sorted, de-duplicated."""
    return sorted({r.recipient for r in await tx.list_recipients(cluster)})


async def register_agent(
    tx: Tx, audit: Audit, who: Principal, agent_id: str, recipient: str, now: float
) -> None:
    """The agent's Hello carried `recipient` (checked by the caller): it is one of its
    cluster's recipients from now on. One small write per connect: a new key is audited
    (`recipient.register`), a known one only has its last_seen_at moved."""
    cluster = who.cluster
    known = await tx.get_recipient(cluster, recipient)
    if known is not None:
        known.last_seen_at = now
        if not known.agent_id:
            known.agent_id = agent_id  # an admin added the key this agent now uses
        await tx.put_recipient(known)
        return
    await tx.put_recipient(
        Recipient(
            cluster=cluster,
            recipient=recipient,
            agent_id=agent_id,
            added_by=f"agent {agent_id}",
            added_at=now,
            last_seen_at=now,
        )
    )
    await audit.ok(
        tx,
        who,
        "recipient.register",
        f"{cluster}/{recipient}",
        detail=f"agent {agent_id}: new key of cluster {cluster}; secrets set before it "
        "need `sami secret rekey` (or set again) to reach it",
    )


class Recipients:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    async def list(self, who: Principal, cluster: str) -> list[Recipient]:
        authz.require(who, Action.MANAGE_CLUSTERS)
        if cluster:
            validation.name("cluster", cluster, "cluster name")
        async with self.ctx.store.tx() as tx:
            return await tx.list_recipients(cluster)

    @audited("recipient.add", _subject)
    async def add(self, who: Principal, cluster: str, recipient: str, label: str) -> Recipient:
        authz.require(who, Action.MANAGE_CLUSTERS)
        validation.name("cluster", cluster, "cluster name")
        recipient = check_recipient("recipient", recipient.strip())
        validation.text("label", label, limit=MAX_LABEL)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            if await tx.get_cluster(cluster) is None:
                raise NotFound(f"cluster {cluster!r} does not exist; `sami cluster list`")
            if await tx.get_recipient(cluster, recipient) is not None:
                raise AlreadyExists(
                    f"{recipient} is already a recipient of cluster {cluster} "
                    f"(`sami cluster recipients {cluster}`)"
                )
            r = Recipient(
                cluster=cluster,
                recipient=recipient,
                added_by=who.name,
                added_at=now,
                label=label,
            )
            await tx.put_recipient(r)
            await self.audit.ok(tx, who, "recipient.add", f"{cluster}/{recipient}", detail=label)
        return r

    @audited("recipient.remove", _subject)
    async def remove(self, who: Principal, cluster: str, recipient: str) -> Recipient:
        authz.require(who, Action.MANAGE_CLUSTERS)
        validation.name("cluster", cluster, "cluster name")
        validation.text("recipient", recipient, limit=age_files.MAX_RECIPIENT)
        async with self.ctx.store.tx() as tx:
            known = await tx.get_recipient(cluster, recipient)
            if known is None:
                raise NotFound(
                    f"{recipient} is not a recipient of cluster {cluster} "
                    f"(`sami cluster recipients {cluster}`)"
                )
            await tx.delete_recipient(cluster, recipient)
            await self.audit.ok(
                tx,
                who,
                "recipient.remove",
                f"{cluster}/{recipient}",
                detail=(f"agent {known.agent_id}" if known.agent_id else known.label)
                + "; secrets encrypted to it stay readable with its key until set again",
            )
        return known

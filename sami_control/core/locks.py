"""The named locks the core takes before it changes a deployment (Tx.lock), so that several
control-plane replicas on one database never act on the same row at once: each reads what
it is about to change under the lock, and a replica that waited for it reads what the other
wrote. On SQLite (one writer at a time) they cost nothing.

Order, so that two transactions never wait for each other: a key's lock (service,
environment, PR: queueing and dispatching on it) before any deployment's, and several
deployments' locks by ascending id. Every write of a deployment (Tx.update_deployment writes
all of its mutable fields) is of a row read under its lock in the same transaction.
"""

from __future__ import annotations

from sami_control.core.model import Deployment
from sami_control.core.store import Tx


def key_lock(service: str, environment: str, pull_request: int) -> str:
    return f"key:{service}/{environment}/{pull_request}"


def deployment_lock(deployment_id: str) -> str:
    return f"deployment:{deployment_id}"


async def hold(tx: Tx, deployment_id: str) -> Deployment | None:
    """The deployment as stored now, locked until the transaction ends."""
    await tx.lock(deployment_lock(deployment_id))
    return await tx.get_deployment(deployment_id)

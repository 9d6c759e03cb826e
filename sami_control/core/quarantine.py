"""Quarantined digests (sami_common/quarantine.py has the rule): a deployment of an artifact
whose digest is quarantined on its service+environment(+PR) is refused unless forced."""

from __future__ import annotations

from sami_common.quarantine import Finished, Outcome, Quarantine, quarantined
from sami_control.core.artifacts import Artifacts
from sami_control.core.errors import FailedPrecondition
from sami_control.core.model import Artifact, State
from sami_control.core.store import Tx

# How far back the history is read: a digest that went bad longer ago than this many
# finished deploys of its target has been forgotten.
HISTORY = 100

_OUTCOMES = {
    State.SUCCEEDED: Outcome.SUCCEEDED,
    State.FAILED: Outcome.FAILED,
    State.ROLLED_BACK: Outcome.ROLLED_BACK,
}


async def quarantine_of(
    tx: Tx, artifacts: Artifacts, service: str, env: str, pr: int, art: Artifact
) -> Quarantine | None:
    """Why `art`'s digest is quarantined on the target, or None."""
    finished = []
    for d in await tx.finished_deploys_of_key(service, env, pr, HISTORY):
        found = await artifacts.by_id(tx, d.artifact_id) if d.artifact_id else None
        digest = found.digest if found is not None else ""
        finished.append(Finished(d.id, digest, _OUTCOMES[d.state], d.rollback_of))
    return quarantined(finished).get(art.digest)


def refusal(q: Quarantine, art: Artifact, service: str, env: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{art.artifact_name}@{q.digest} is quarantined in {service}/{env}: {q.why}; deploy "
        "another artifact, or this one again with --force (audited)"
    )

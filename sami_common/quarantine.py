"""Which artifact digests are quarantined on one service+environment(+PR): the one rule the
control plane enforces (it refuses to deploy them again without `force`) and the CLI follows
(`sami rollback` and `sami promote` never pick them). Pure: both sides map their own
deployments into `Finished` and call `quarantined()`.

A digest is quarantined where its latest word is bad, newest first:
- a deploy of it ended ROLLED_BACK (it replaced a working one, its health checks failed, and
  the agent put the working one back), or
- a rollback (a SUCCEEDED deployment with `rollback_of`, naming a deploy of the same digest
  in the history given) took the service away from it: the SUCCEEDED deploy just before the
  rollback is the one rolled back;
and no SUCCEEDED deploy of it came later (a forced deploy that went well lifts it).

FAILED is not bad word enough: it also ends deployments that never ran (the control plane
gave up after its attempts, an agent could not pull the image or reach its registry), and
a CI job retrying after an outage must not be refused; a FAILED deploy of a new service has
nothing to displace. Such a digest can be deployed again (and fail again) as before.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Finished:
    """A deploy (not a teardown) of one target that ended SUCCEEDED, FAILED or ROLLED_BACK."""

    id: str
    digest: str
    outcome: Outcome
    rollback_of: str = ""


@dataclass(frozen=True, slots=True)
class Quarantine:
    digest: str
    # The deployment that put it there: the one that failed or was rolled back, or the
    # rollback that took the service away from it.
    by: str
    why: str


def quarantined(newest_first: Iterable[Finished]) -> dict[str, Quarantine]:
    """The quarantined digests of one target, from its finished deploys, newest first."""
    history = list(newest_first)
    digests = {d.id: d.digest for d in history}
    cleared: set[str] = set()
    found: dict[str, Quarantine] = {}
    rolled_back_by = ""  # a rollback seen, whose predecessor is not yet found

    def mark(digest: str, by: str, why: str) -> None:
        if digest and digest not in cleared and digest not in found:
            found[digest] = Quarantine(digest, by, why)

    for d in history:
        if d.outcome is Outcome.ROLLED_BACK:
            mark(d.digest, d.id, f"deployment {d.id} {d.outcome.name} with it")
            continue
        if d.outcome is Outcome.FAILED:
            continue  # says nothing of the digest (module doc)
        if rolled_back_by:
            mark(d.digest, rolled_back_by, f"deployment {rolled_back_by} rolled it back")
        elif d.digest not in found:
            cleared.add(d.digest)
        # A rollback_of naming a deploy of another artifact is no rollback (the server refuses
        # to create one; an old history may hold one).
        is_rollback = bool(d.rollback_of) and digests.get(d.rollback_of) == d.digest
        rolled_back_by = d.id if is_rollback else ""
    return found

"""The deployment state machine: which moves are legal, and the event each move records."""

from __future__ import annotations

from sami_control.core.errors import FailedPrecondition
from sami_control.core.model import Deployment, Event, EventType, State

# QUEUED → ASSIGNED → IN_PROGRESS → SUCCEEDED | FAILED | ROLLED_BACK; CANCELLED from any
# live state; SUPERSEDED only while queued; ASSIGNED/IN_PROGRESS → QUEUED when a lease
# expires and the work is offered again; IN_PROGRESS → FAILED when attempts run out.
# AWAITING_APPROVAL (a target with `approval: required`) → QUEUED when approved, or
# CANCELLED when rejected, expired or cancelled; nothing else leaves it (never dispatched).
LEGAL: dict[State, frozenset[State]] = {
    State.AWAITING_APPROVAL: frozenset({State.QUEUED, State.CANCELLED}),
    State.QUEUED: frozenset({State.ASSIGNED, State.CANCELLED, State.SUPERSEDED, State.FAILED}),
    State.ASSIGNED: frozenset(
        {
            State.IN_PROGRESS,
            State.QUEUED,
            State.CANCELLED,
            State.FAILED,
            State.SUCCEEDED,
            State.ROLLED_BACK,
        }
    ),
    State.IN_PROGRESS: frozenset(
        {State.SUCCEEDED, State.FAILED, State.ROLLED_BACK, State.CANCELLED, State.QUEUED}
    ),
}


def move(d: Deployment, to: State, now: float, message: str = "", phase: str = "") -> Event:
    """Change d's state and return the event recording it (the caller stores both)."""
    if to not in LEGAL.get(d.state, frozenset()):
        raise FailedPrecondition(f"deployment {d.id} is {d.state.name} and cannot become {to.name}")
    d.state = to
    d.updated_at = now
    if to.terminal:
        d.finished_at = now
        d.status_message = message
        d.lease_expires = 0.0
    return record(d, EventType.STATE_CHANGED, now, message=message, phase=phase)


def record(
    d: Deployment, type_: EventType, now: float, message: str = "", phase: str = ""
) -> Event:
    d.last_sequence += 1
    d.updated_at = now
    return Event(
        deployment_id=d.id,
        sequence=d.last_sequence,
        type=type_,
        state=d.state,
        phase=phase,
        message=message,
        agent_id=d.agent_id,
        attempt=d.attempt,
        time=now,
    )

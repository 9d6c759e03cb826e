"""What the agent remembers about each lease it holds, across reconnects.

The control plane confirms a lease's reports only by storing them (progress is deduplicated
by sequence) and by answering the result with `Done`. Until then the agent keeps every
report it produced for the lease so that it can send them all again on a new stream: the
control plane may have lost the tail of the old one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog

from sami_agent.executor import ExecutionResult, Job, Outcome
from sami_agent.pb import agent_pb2
from sami_common import limits

_OUTCOMES = {
    Outcome.SUCCEEDED: agent_pb2.OUTCOME_SUCCEEDED,
    Outcome.FAILED: agent_pb2.OUTCOME_FAILED,
    Outcome.ROLLED_BACK: agent_pb2.OUTCOME_ROLLED_BACK,
    Outcome.CANCELLED: agent_pb2.OUTCOME_CANCELLED,
}


def outcome_to_proto(outcome: Outcome) -> agent_pb2.Outcome:
    return _OUTCOMES[outcome]


@dataclass
class Lease:
    deployment_id: str
    lease_id: str
    epoch: int
    job: Job
    # Seconds; 0 when the assignment did not say. Used to keep heartbeats frequent enough.
    lease_ttl: float
    log: structlog.typing.FilteringBoundLogger
    # Set by Cancel: the executor stops and rolls back.
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    # Every progress report sent for this lease, in sequence order (sequence = index + 1).
    progress: list[agent_pb2.Progress] = field(default_factory=list)
    result: agent_pb2.Result | None = None
    # Set when the lease is no longer ours (Revoke, not resumed, Done, superseded): nothing
    # more is reported for it, whatever its executor thread still does.
    dropped: bool = False
    # time.monotonic() when the assignment arrived (the job duration metric).
    received_at: float = field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        """Its job has not finished (no Result yet)."""
        return self.result is None

    def held(self) -> agent_pb2.HeldLease:
        return agent_pb2.HeldLease(
            deployment_id=self.deployment_id, lease_id=self.lease_id, epoch=self.epoch
        )

    def add_progress(self, phase: str, message: str) -> agent_pb2.Progress:
        # sami_agent.outgoing cleans it to the control plane's limits as it is sent; what is
        # kept for resending is only cut, so a runaway message (a whole compose file) is not
        # held until the lease ends. One character more than the limit: the cleaned text
        # is the same, and still shows it was cut.
        message = message[: limits.MAX_PROGRESS_MESSAGE + 1]
        report = agent_pb2.Progress(
            deployment_id=self.deployment_id,
            lease_id=self.lease_id,
            epoch=self.epoch,
            sequence=len(self.progress) + 1,
            phase=phase,
            message=message,
        )
        self.progress.append(report)
        return report

    def set_result(self, result: ExecutionResult) -> agent_pb2.Result:
        reason = result.reason[: limits.MAX_REASON + 1]  # see add_progress
        if result.outcome is Outcome.CANCELLED and not reason:
            reason = self.cancel_reason or "cancelled"
        self.result = agent_pb2.Result(
            deployment_id=self.deployment_id,
            lease_id=self.lease_id,
            epoch=self.epoch,
            outcome=outcome_to_proto(result.outcome),
            reason=reason,
        )
        return self.result

    def unconfirmed(self) -> list[agent_pb2.AgentMessage]:
        """Everything to send again on a new stream, in the order it was first sent."""
        messages = [agent_pb2.AgentMessage(progress=p) for p in self.progress]
        if self.result is not None:
            messages.append(agent_pb2.AgentMessage(result=self.result))
        return messages

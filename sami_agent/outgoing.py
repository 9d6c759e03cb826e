"""Every message the agent sends passes `clean()` on its way to the stream.

The control plane refuses a report whose free text is too long or holds a control character
(sami_common.limits), and a refused report is lost: a refused Result left its deployment
IN_PROGRESS for good. Executors quote whatever they saw (an HTTP reason phrase, a task's
error, `docker` output with its line breaks), so the text is cleaned here, once, for every
message, rather than at each place a message is built.
"""

from __future__ import annotations

from sami_agent.pb import agent_pb2
from sami_common import limits

# The free-text fields of each kind of AgentMessage, with the longest the control plane
# accepts.
FREE_TEXT: dict[str, dict[str, int]] = {
    "hello": {"version": limits.MAX_VERSION},
    "progress": {"phase": limits.MAX_PHASE, "message": limits.MAX_PROGRESS_MESSAGE},
    "result": {"reason": limits.MAX_REASON},
    "cron_run": {"message": limits.MAX_CRON_MESSAGE, "schedule": limits.MAX_CRON_SCHEDULE},
    # `list.field`: the field of each element of a repeated message field.
    "live_status": {
        "services.update_state": limits.MAX_LIVE_TEXT,
        "services.update_message": limits.MAX_LIVE_TEXT,
        "services.outside_change": limits.MAX_LIVE_TEXT,
    },
    "query_end": {"error": limits.MAX_REASON},
}
# Repeated free-text fields (each element cleaned).
FREE_TEXT_LISTS: dict[str, dict[str, int]] = {
    "hello": {"capabilities": limits.MAX_CAPABILITY},
}
# The other string fields are identifiers the control plane matches exactly (ids, names,
# stacks): changing one would make the report about something else, so they are sent as
# they are. tests/agent/test_agent_outgoing.py checks every string field is in one list.
IDENTIFIERS: dict[str, frozenset[str]] = {
    "hello": frozenset(
        {"agent_id", "recipient", "held_leases.deployment_id", "held_leases.lease_id"}
    ),
    "ack": frozenset({"deployment_id", "lease_id"}),
    "heartbeat": frozenset({"leases.deployment_id", "leases.lease_id"}),
    "progress": frozenset({"deployment_id", "lease_id"}),
    "result": frozenset({"deployment_id", "lease_id"}),
    "inventory": frozenset({"stacks.stack_name", "stacks.service", "stacks.deployment_id"}),
    "cron_run": frozenset(
        {"run_id", "deployment_id", "service", "environment", "stack", "job", "agent_id", "cluster"}
    ),
    "live_status": frozenset(
        {
            "services.stack_name",
            "services.service",
            "services.deployment_id",
            "services.label_digest",
            "services.image",
        }
    ),
    # A query's answer goes to its caller as the swarm said it (log lines keep their bytes;
    # the control plane stores none of it and bounds it by size: core/queries.py).
    "query_chunk": frozenset(
        {
            "id",
            "lines.task",
            "lines.stream",
            "lines.text",
            "plan.stack_name",
            "plan.cluster",
            "plan.agent_id",
            "plan.image",
            "plan.services.name",
            "plan.services.action",
            "plan.services.changes.field",
            "plan.services.changes.before",
            "plan.services.changes.after",
        }
    ),
    "query_end": frozenset({"id", "code"}),
}


def clean(message: agent_pb2.AgentMessage) -> agent_pb2.AgentMessage:
    """`message` with its free text cleaned to what the control plane accepts.

    Changes `message` in place (cleaning is idempotent, so a message sent again is not
    changed twice) and returns it.
    """
    kind = message.WhichOneof("msg")
    if kind is None:
        return message
    body = getattr(message, kind)
    for name, limit in FREE_TEXT.get(kind, {}).items():
        outer, _, inner = name.rpartition(".")
        for holder in getattr(body, outer) if outer else (body,):
            value = getattr(holder, inner)
            cleaned = limits.clean_text(value, limit)
            if cleaned != value:
                setattr(holder, inner, cleaned)
    for name, limit in FREE_TEXT_LISTS.get(kind, {}).items():
        values = getattr(body, name)
        for index, value in enumerate(values):
            cleaned = limits.clean_text(value, limit)
            if cleaned != value:
                values[index] = cleaned
    return message

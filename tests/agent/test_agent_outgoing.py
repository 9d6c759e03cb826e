"""Every report the agent sends passes the control plane's free-text checks (issue 15.4): a
refused Result used to be dropped, leaving its deployment IN_PROGRESS for good."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from agent_fakes import WAIT, ScriptedExecutor, assignment, connect, held, running_agent
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from sami.v1 import agent_pb2, cron_pb2
from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter
from sami_agent.outgoing import FREE_TEXT, FREE_TEXT_LISTS, IDENTIFIERS, clean
from sami_common import limits
from sami_control.core import validation

pytestmark = pytest.mark.timeout(30)

# What executors really quote: an HTTP reason phrase with a NUL and a bidi override, docker
# output with its line breaks and colours, a zero-width space, a line separator.
HOSTILE = "HTTP 502 Bad\x00Gate\u202eway\r\nError: \x1b[31mno such image\x1b[0m\u200b\u2028"
LONG_REASON = (HOSTILE + " " + "x" * 200 + "\n") * 40  # over 10,000 characters


def server_accepts(field: str, value: str, limit: int) -> None:
    """The control plane's own check (raises InvalidArgument when it would refuse)."""
    validation.text(field, value, limit=limit)
    assert limits.first_refused(value) is None, f"{field} holds a refused character"


class HostileExecutor:
    """Reports and fails with the texts an executor may quote."""

    capabilities: tuple[str, ...] = ("swarm",)

    def __init__(self) -> None:
        self.gate = threading.Event()

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        report("apply\n" + "p" * 100, LONG_REASON)
        self.gate.wait(WAIT)
        return ExecutionResult(Outcome.FAILED, LONG_REASON)


def test_a_long_reason_with_control_characters_arrives_cleaned_and_within_limits() -> None:
    assert len(LONG_REASON) > 10_000

    async def scenario() -> None:
        executor = HostileExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control, heartbeat=30.0)
            a = assignment()
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            progress = (await stream.recv_kind("progress")).progress
            server_accepts("progress.phase", progress.phase, 64)
            server_accepts("progress.message", progress.message, 4000)
            assert progress.phase.startswith("apply\\np")
            assert progress.message.startswith("HTTP 502 Bad\\x00Gate\\u202eway\\r\\nError: ")
            assert progress.message.endswith("…")
            executor.gate.set()
            result = (await stream.recv_kind("result")).result
            server_accepts("result.reason", result.reason, 4000)
            assert len(result.reason) == limits.MAX_REASON
            assert result.reason.startswith("HTTP 502 Bad\\x00Gate\\u202eway")
            # Sent again on a new stream (the Result was not confirmed): cleaned as well.
            stream.close()
            stream, hello = await connect(control, resumed=[held(a)])
            assert list(hello.held_leases) == [held(a)]
            again = [await stream.recv() for _ in range(2)]
            assert [m.WhichOneof("msg") for m in again] == ["progress", "result"]
            assert again[0].progress == progress
            assert again[1].result == result

    asyncio.run(scenario())


def test_ordinary_reports_are_sent_as_they_are() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(before=("pull",), after=())
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            assert (await stream.recv_kind("progress")).progress.message == "web before 1"
            executor.gate.set()
            assert (await stream.recv_kind("result")).result.reason == "web succeeded"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "tab\tis kept",
        "\x00" * 5000,
        "\u2029" * 3,
        "é" * 4001,
        "a" * 3998 + "\n",
        "a" * 3999 + "\x7f",
        "\U000f0000 private \U000e0001 tag",
        "\ud800 lone surrogate",
        HOSTILE * 500,
    ],
)
def test_clean_text_always_passes_the_server_and_is_idempotent(value: str) -> None:
    cleaned = limits.clean_text(value, limits.MAX_REASON)
    server_accepts("result.reason", cleaned, limits.MAX_REASON)
    assert limits.clean_text(cleaned, limits.MAX_REASON) == cleaned
    if len(value) <= limits.MAX_REASON and limits.first_refused(value) is None:
        assert cleaned == value


def test_clean_text_escapes_and_never_cuts_an_escape_in_half() -> None:
    assert limits.clean_text("a\nb\x1bc\u202ed", 100) == "a\\nb\\x1bc\\u202ed"
    assert limits.clean_text("abcdef", 4) == "abc…"
    # "ab" + "\x00" escaped is 6 characters: no room for the escape and the ellipsis.
    assert limits.clean_text("ab\x00cd", 6) == "ab…"
    assert limits.clean_text("ab\x00", 6) == "ab\\x00"


def test_clean_text_of_a_huge_value_costs_what_a_short_one_does() -> None:
    huge = "\x00" * 50_000_000
    started = time.monotonic()
    cleaned = limits.clean_text(huge, limits.MAX_REASON)
    assert time.monotonic() - started < 0.5
    assert len(cleaned) <= limits.MAX_REASON


def test_cron_run_message_and_hello_version_are_cleaned() -> None:
    run = clean(
        agent_pb2.AgentMessage(
            cron_run=cron_pb2.CronRun(
                run_id="cron_1",
                message="backup.1: task: \x1b[1mnon-zero exit (3)\n" * 500,
                schedule="*/5 * * * *\n",
            )
        )
    ).cron_run
    server_accepts("cron_run.message", run.message, limits.MAX_CRON_MESSAGE)
    assert run.schedule == "*/5 * * * *\\n"
    assert run.run_id == "cron_1"
    hello = clean(
        agent_pb2.AgentMessage(
            hello=agent_pb2.Hello(
                agent_id="agent-1", version="1.0\x00" * 50, capabilities=["swarm", "x\n" * 40]
            )
        )
    ).hello
    server_accepts("hello.version", hello.version, 100)
    for capability in hello.capabilities:
        server_accepts("hello.capabilities", capability, 50)
    assert hello.capabilities[0] == "swarm" and hello.agent_id == "agent-1"


def _string_fields(descriptor: Descriptor, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            found.add(prefix + field.name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not (
            field.message_type.full_name.startswith("google.")
        ):
            found |= _string_fields(field.message_type, f"{prefix}{field.name}.")
    return found


def test_every_string_field_an_agent_sends_is_either_cleaned_or_an_identifier() -> None:
    """A field added to AgentMessage later must be put in one of the lists."""
    for kind in agent_pb2.AgentMessage.DESCRIPTOR.oneofs_by_name["msg"].fields:
        fields = _string_fields(kind.message_type)
        listed = (
            set(FREE_TEXT.get(kind.name, {}))
            | set(FREE_TEXT_LISTS.get(kind.name, {}))
            | IDENTIFIERS.get(kind.name, frozenset())
        )
        assert fields == listed, f"AgentMessage.{kind.name}: unlisted {fields - listed}"


def test_live_status_text_is_cleaned_in_every_service() -> None:
    message = clean(
        agent_pb2.AgentMessage(
            live_status=agent_pb2.LiveStatus(
                services=[
                    agent_pb2.LiveService(service="web", update_message="paused\x1b[31m" * 100),
                    agent_pb2.LiveService(service="api", outside_change="spec\n"),
                ]
            )
        )
    ).live_status
    first, second = message.services
    server_accepts("live_status.services.update_message", first.update_message, 512)
    assert "\n" not in second.outside_change and second.outside_change.startswith("spec")
    assert (first.service, second.service) == ("web", "api")

"""The query relay (core/queries.py) without Docker or sockets: an agent's answers reach
the caller within their bounds, and either side leaving ends the other's part."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from sami_control.core.commands import LogsAsk, QueryCancelCommand, QueryCommand
from sami_control.core.errors import NotFound, ResourceExhausted, Unavailable
from sami_control.core.queries import Chunk, OpenQuery, Relay
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.settings import Settings

ASK = LogsAsk("shop", "web", None, 10, True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(agent_id: str = "a1", cluster: str = "c1", caps: tuple[str, ...] = ("swarm",)):
    return AgentSession(agent_id, cluster, "1", frozenset(caps), "tok", 0.0, 0.0)


def sent(s: AgentSession) -> list[object]:
    out = []
    while not s.outbox.empty():
        out.append(s.outbox.get_nowait())
    return out


def relay(*sessions: AgentSession, replica: str = "", **settings: float) -> tuple[Relay, Clock]:
    reg = Sessions()
    for s in sessions:
        reg.put(s)
    clock = Clock()
    return Relay(reg, Settings(**settings), clock, lambda: replica), clock  # type: ignore[arg-type]


def lines(n: int, size: int = 10) -> Chunk:
    return Chunk(n, size, f"{n} lines")


async def collect(gen: AsyncGenerator[Chunk, None]) -> list[object]:
    return [c.payload async for c in gen]


async def test_chunks_reach_the_caller_until_the_end_marker() -> None:
    a = session()
    r, _ = relay(a)
    q = r.open("c1", ASK)
    (cmd,) = sent(a)
    assert isinstance(cmd, QueryCommand) and cmd.query_id == q.id and cmd.ask == ASK
    r.chunk(a, q.id, lines(2))
    r.chunk(a, q.id, lines(3))
    r.end(a, q.id, "", "")
    assert await collect(r.answers(q)) == ["2 lines", "3 lines"]
    assert r.open_count(a) == 0
    assert sent(a) == []  # it ended by itself: nothing to cancel


async def test_the_caller_leaving_tells_the_agent_to_stop() -> None:
    a = session()
    r, _ = relay(a)
    q = r.open("c1", ASK)
    sent(a)
    r.chunk(a, q.id, lines(1))
    gen = r.answers(q)
    assert (await anext(gen)).payload == "1 lines"
    await gen.aclose()
    assert sent(a) == [QueryCancelCommand(q.id, "the caller left")]
    assert r.open_count(a) == 0
    # What the agent still sends for it is dropped.
    r.chunk(a, q.id, lines(1))
    assert q.queue.empty()


async def test_a_cancelled_caller_tells_the_agent_to_stop() -> None:
    a = session()
    r, _ = relay(a)
    q = r.open("c1", ASK)
    sent(a)
    r.chunk(a, q.id, lines(1))

    async def follow() -> None:
        async with contextlib.aclosing(r.answers(q)) as gen:
            async for _ in gen:
                pass

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [type(c) for c in sent(a)] == [QueryCancelCommand]


async def test_the_agent_disconnecting_ends_the_callers_stream_with_unavailable() -> None:
    a = session()
    r, _ = relay(a)
    q = r.open("c1", ASK)
    r.chunk(a, q.id, lines(1))
    r.session_gone(a)
    gen = r.answers(q)
    assert (await anext(gen)).payload == "1 lines"
    with pytest.raises(Unavailable, match="agent a1 of cluster 'c1' disconnected"):
        await anext(gen)
    assert r.open_count(a) == 0


async def test_the_line_limit_ends_the_stream_and_the_agents_query() -> None:
    a = session()
    r, _ = relay(a, query_max_lines=5)
    q = r.open("c1", ASK)
    sent(a)
    r.chunk(a, q.id, lines(5))
    r.chunk(a, q.id, lines(1))
    gen = r.answers(q)
    assert (await anext(gen)).payload == "5 lines"
    with pytest.raises(ResourceExhausted, match="limit of 5 lines"):
        await anext(gen)
    (cancel,) = sent(a)
    assert isinstance(cancel, QueryCancelCommand) and "5 lines" in cancel.reason


async def test_the_byte_limit_ends_the_stream() -> None:
    a = session()
    r, _ = relay(a, query_max_bytes=100)
    q = r.open("c1", ASK)
    r.chunk(a, q.id, lines(1, size=101))
    with pytest.raises(ResourceExhausted, match="limit of 100 bytes"):
        await collect(r.answers(q))


async def test_an_agent_over_the_rate_is_stopped() -> None:
    a = session()
    r, clock = relay(a, query_lines_per_second=10)
    q = r.open("c1", ASK)
    # 10 lines/s with 5 s of burst: 50 at once pass, and 10 more a second later.
    r.chunk(a, q.id, lines(50))
    clock.now += 1
    r.chunk(a, q.id, lines(10))
    assert q.queue.qsize() == 2
    r.chunk(a, q.id, lines(1))
    with pytest.raises(ResourceExhausted, match="more than 10 lines per second"):
        await collect(r.answers(q))


async def test_a_slow_caller_does_not_make_the_control_plane_hold_everything() -> None:
    a = session()
    r, _ = relay(a, query_lines_per_second=0)
    q = r.open("c1", ASK)
    for _ in range(300):
        r.chunk(a, q.id, lines(1))
    assert q.queue.qsize() <= 257
    with pytest.raises(ResourceExhausted, match="reads slower"):
        await collect(r.answers(q))


async def test_concurrent_queries_per_agent_are_limited_by_name() -> None:
    a = session()
    r, _ = relay(a, max_queries_per_agent=2)
    first = r.open("c1", ASK)
    r.open("c1", ASK)
    with pytest.raises(ResourceExhausted, match=r"agent a1 .* already answers 2 queries"):
        r.open("c1", ASK)
    r.end(a, first.id, "", "")
    await collect(r.answers(first))
    r.open("c1", ASK)  # room again


async def test_queries_go_to_the_least_busy_agent_that_runs_swarm() -> None:
    a, b, dry = session("a"), session("b"), session("dry", caps=("dry-run",))
    r, _ = relay(a, b, dry)
    q1, q2 = r.open("c1", ASK), r.open("c1", ASK)
    assert {q1.session.agent_id, q2.session.agent_id} == {"a", "b"}


async def test_no_agent_here_names_the_replica_and_says_to_retry() -> None:
    r, _ = relay(session(cluster="other"), replica="replica-7")
    with pytest.raises(Unavailable, match=r"this control-plane replica \(replica-7\).*retry"):
        r.open("c1", ASK)
    r1, _ = relay()
    with pytest.raises(Unavailable, match="no agent of cluster 'c1'"):
        r1.open("c1", ASK)


async def test_an_agent_that_never_answers_is_reported() -> None:
    a = session()
    r, _ = relay(a, query_answer_timeout=0.05)
    q = r.open("c1", ASK)
    with pytest.raises(Unavailable, match=r"did not answer within 0\.05 s"):
        await collect(r.answers(q))
    assert [type(c) for c in sent(a)] == [QueryCommand, QueryCancelCommand]


async def test_an_agents_error_reaches_the_caller_with_its_code() -> None:
    a = session()
    r, _ = relay(a)
    q = r.open("c1", ASK)
    r.end(a, q.id, "NOT_FOUND", "service shop_web not found")
    with pytest.raises(NotFound, match="agent a1: service shop_web not found"):
        await collect(r.answers(q))


async def test_another_agent_cannot_answer_a_query() -> None:
    a, b = session("a"), session("b")
    r, _ = relay(a, b, max_queries_per_agent=1)
    q: OpenQuery = r.open("c1", ASK)
    other = b if q.session is a else a
    r.chunk(other, q.id, lines(1))
    r.end(other, q.id, "", "")
    assert q.queue.empty() and not q.ended


async def test_an_agent_that_accepted_may_stay_quiet_past_the_answer_deadline() -> None:
    a = session()
    r, _ = relay(a, query_answer_timeout=0.05)
    q = r.open("c1", ASK)
    r.chunk(a, q.id, Chunk(0, 4, None))  # accepted, no line yet

    async def later() -> None:
        await asyncio.sleep(0.2)
        r.chunk(a, q.id, lines(1))
        r.end(a, q.id, "", "")

    task = asyncio.create_task(later())
    assert await collect(r.answers(q)) == ["1 lines"]
    await task

"""How a paced `sami logs` stream leaves the agent: its lines in chunks gathered for a
moment, not one line a chunk (bench figure 18 found that tripled the CPU per line), in
order, every line before the end marker; an unpaced one as it always did."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog

from sami.v1 import agent_pb2, query_pb2
from sami_agent.executor import Job
from sami_agent.queries import LogLine, LogsRequest, Queries, StackDiff

LINES = 400


class Talker:
    """An answerer whose service printed LINES lines."""

    def service_logs(
        self, req: LogsRequest, emit: Callable[[LogLine], bool], cancelled: threading.Event
    ) -> None:
        for i in range(LINES):
            if not emit(LogLine(task="web.1", stream="stdout", text=f"line {i}", time=None)):
                return

    def stack_diff(self, job: Job) -> StackDiff:
        raise NotImplementedError


async def _answer(rate: float) -> list[agent_pb2.AgentMessage]:
    sent: list[agent_pb2.AgentMessage] = []
    queries = Queries(Talker(), sent.append, lambda: structlog.get_logger())
    query = query_pb2.Query(id="qry_1", lines_per_second=rate)
    query.logs.stack_name = "shop"
    queries.start(query)
    while not any(m.HasField("query_end") for m in sent):
        await asyncio.sleep(0.02)
    return sent


def _chunks(sent: list[agent_pb2.AgentMessage]) -> list[list[str]]:
    return [
        [line.text for line in m.query_chunk.lines]
        for m in sent
        if m.HasField("query_chunk") and m.query_chunk.lines
    ]


def test_a_paced_stream_leaves_in_chunks_in_order_before_its_end() -> None:
    # 200 lines a second: the first second's lines burst, the next 200 are paced (5 ms each).
    started = time.monotonic()
    sent = asyncio.run(_answer(rate=200))
    # The bound holds (a lower bound only: a slow machine is slower still).
    assert time.monotonic() - started >= 0.95
    chunks = _chunks(sent)
    assert [text for chunk in chunks for text in chunk] == [f"line {i}" for i in range(LINES)]
    # Paced lines gathered for 50 ms: about 10 lines a chunk over one second, not 200 chunks.
    assert len(chunks) < 40, [len(c) for c in chunks]
    assert sent[-1].HasField("query_end") and not sent[-1].query_end.code


def test_an_unpaced_stream_leaves_as_it_arrives() -> None:
    sent = asyncio.run(_answer(rate=0))
    chunks = _chunks(sent)
    assert [text for chunk in chunks for text in chunk] == [f"line {i}" for i in range(LINES)]
    assert sent[-1].HasField("query_end") and not sent[-1].query_end.code

"""QueryService (logs, plans asked of a connected agent): protobuf in, one core call,
protobuf out. The agent's answers pass through as the messages it sent (core/queries.py
counts them without reading them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sami_control.api import convert
from sami_control.api.auth import principal
from sami_control.api.pb import query_pb2, query_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.queries import Chunk, Relay
from sami_control.core.sessions import AgentSession


class QueryServicer(Servicer, query_pb2_grpc.QueryServiceServicer):
    async def ServiceLogs(
        self, request: query_pb2.ServiceLogsRequest, context: Any
    ) -> AsyncIterator[query_pb2.ServiceLogsResponse]:
        since = convert.seconds(request.since) if request.HasField("since") else None
        chunks = self.core.queries.logs(
            principal(),
            request.service,
            request.environment,
            request.pull_request,
            since,
            request.tail,
            request.follow,
        )
        # Closed at once when the caller leaves: the agent is told to stop.
        async with contextlib.aclosing(chunks) as answers:
            async for chunk in answers:
                lines = chunk.payload
                assert isinstance(lines, query_pb2.QueryChunk)
                yield query_pb2.ServiceLogsResponse(lines=lines.lines)

    async def PlanDeployment(
        self, request: query_pb2.PlanDeploymentRequest, context: Any
    ) -> query_pb2.PlanDeploymentResponse:
        cluster, agent_id, answer = await self.core.queries.plan(
            principal(),
            request.service,
            request.environment,
            request.pull_request,
            request.artifact,
        )
        assert isinstance(answer, query_pb2.QueryChunk)
        out = query_pb2.PlanDeploymentResponse()
        out.CopyFrom(answer.plan)
        out.cluster = cluster
        out.agent_id = agent_id
        return out


def relay_report(relay: Relay, session: AgentSession, kind: str, msg: Any) -> None:
    """Hand a query_chunk or query_end of the agent's stream to the relay."""
    if kind == "query_chunk":
        c: query_pb2.QueryChunk = msg.query_chunk
        payload = c if (c.lines or c.HasField("plan")) else None
        relay.chunk(session, c.id, Chunk(len(c.lines), c.ByteSize(), payload))
    else:
        e: query_pb2.QueryEnd = msg.query_end
        relay.end(session, e.id, e.code, e.error)

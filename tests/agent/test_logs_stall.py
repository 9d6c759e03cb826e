"""A non-follow `sami logs` read that the engine stops feeding without ending it (Swarm's
log broker does this on some large tails) ends with what arrived and says why, instead of
hanging the caller. The engine here is a stand-in: the stall cannot be provoked on demand
on a real one (tests/swarm/test_swarm_agent_queries.py reads real logs)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sami_agent.executors import swarm_query
from sami_agent.queries import LogLine, LogsRequest, QueryError


class StallingBody:
    """One multiplexed stdout frame, then a read that blocks until the response is closed."""

    def __init__(self) -> None:
        line = b"2026-12-03T10:00:00.000000000Z com.docker.swarm.task.id=t1 hello\n"
        self.pending = b"\x01\x00\x00\x00" + len(line).to_bytes(4, "big") + line
        self.closed = threading.Event()

    def read(self, n: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        self.closed.wait(30)
        raise OSError("response closed")


class Response:
    def __init__(self) -> None:
        self.raw = StallingBody()

    def close(self) -> None:
        self.raw.closed.set()


class Api:
    def __init__(self) -> None:
        self.response = Response()

    def services(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"Spec": {"Name": "shop_web"}}]

    def inspect_service(self, name: str) -> dict[str, Any]:
        return {"ID": "svc1", "Spec": {"TaskTemplate": {"ContainerSpec": {}}}}

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"ID": "t1", "Slot": 1}]

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _get(self, url: str, **kw: Any) -> Response:
        return self.response

    def _raise_for_status(self, res: Response) -> None:
        pass


class Client:
    def __init__(self) -> None:
        self.api = Api()


def test_a_stalled_non_follow_read_ends_with_what_arrived_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(swarm_query, "STALL_SECONDS", 0.5)
    got: list[LogLine] = []
    req = LogsRequest(stack_name="shop", service="", since=None, tail=1000, follow=False)
    started = time.monotonic()
    with pytest.raises(QueryError) as caught:
        swarm_query.service_logs(
            Client(), req, lambda line: got.append(line) or True, threading.Event()
        )  # type: ignore[arg-type]
    assert time.monotonic() - started < 10
    assert [line.text for line in got] == ["hello"]
    assert caught.value.code == "UNAVAILABLE"
    assert "stopped sending the logs of shop_web" in str(caught.value)
    assert "--tail or --since" in str(caught.value)

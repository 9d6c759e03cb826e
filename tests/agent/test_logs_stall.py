"""A non-follow `sami logs` read that the engine stops feeding without ending it (Swarm's
log broker does this on some large tails) ends with what arrived and says why, instead of
hanging the caller. The engine here is a stand-in: the stall cannot be provoked on demand
on a real one (tests/swarm/test_swarm_agent_queries.py reads real logs)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
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


class _Engine(http.server.BaseHTTPRequestHandler):
    """Just enough of the Engine API over a real socket for one service's logs: one line,
    then nothing (the connection stays open) until the test ends."""

    release: threading.Event
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/logs"):
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
            self.end_headers()
            line = b"2026-12-03T10:00:00.000000000Z com.docker.swarm.task.id=t1 hello\n"
            self.wfile.write(b"\x01\x00\x00\x00" + len(line).to_bytes(4, "big") + line)
            self.wfile.flush()
            self.release.wait(30)
            return
        if path.endswith("/services"):
            body: Any = [{"ID": "svc1", "Spec": {"Name": "shop_web"}}]
        elif path.endswith("/services/shop_web"):
            body = {"ID": "svc1", "Spec": {"Name": "shop_web", "TaskTemplate": {}}}
        else:  # /tasks
            body = [{"ID": "t1", "Slot": 1}]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    release = threading.Event()
    handler = type("Engine", (_Engine,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{server.server_port}", version="1.41")
    try:
        yield client
    finally:
        release.set()
        client.close()
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(40)
def test_over_a_real_socket_a_stall_ends_at_once_and_is_reported(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the response from the guard's thread did not wake the read: it waited out
    the client's 60 s timeout, whose error (urllib3's, not an OSError) ended the query as if
    it were complete. The guard now shuts the socket down."""
    monkeypatch.setattr(swarm_query, "STALL_SECONDS", 0.5)
    got: list[LogLine] = []
    req = LogsRequest(stack_name="shop", service="", since=None, tail=1000, follow=False)
    started = time.monotonic()
    with pytest.raises(QueryError) as caught:
        swarm_query.service_logs(
            engine, req, lambda line: got.append(line) or True, threading.Event()
        )
    assert time.monotonic() - started < 10
    assert [line.text for line in got] == ["hello"]
    assert "stopped sending the logs of shop_web" in str(caught.value)


@pytest.mark.timeout(40)
def test_over_a_real_socket_a_quiet_follow_waits_and_ends_when_cancelled(
    engine: docker.DockerClient,
) -> None:
    """A follow of a quiet service neither times out nor outlives its caller."""
    got: list[LogLine] = []
    cancelled = threading.Event()
    req = LogsRequest(stack_name="shop", service="", since=None, tail=10, follow=True)
    threading.Timer(1.5, cancelled.set).start()
    started = time.monotonic()
    swarm_query.service_logs(engine, req, lambda line: got.append(line) or True, cancelled)
    assert 1.4 < time.monotonic() - started < 6
    assert [line.text for line in got] == ["hello"]

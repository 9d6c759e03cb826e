"""The dashboard's status page and the overview's drift mark, over HTTP against a live
server fed by an agent's LiveStatus reports on a real gRPC stream: the rows `sami status`
shows, a drift as it starts (live, on the page's event stream), and only the rows a scoped
token may read."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterator

from sami.v1 import agent_pb2
from tests.security.conftest import (  # noqa: F401
    AgentStream,
    Server,
    create,
    live_service,
    seed,
    serve,
)
from tests.ui.webclient import WebClient


def _until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _rows(stream: Iterator[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The next `rows` event's rows."""
    for kind, _, data in stream:
        if kind == "rows":
            rows: list[dict[str, str]] = json.loads(data)["rows"]
            return rows
    raise AssertionError("the status stream ended")


def _text(body: str) -> str:
    return html.unescape(body)


def test_status_page_shows_rows_drift_live_and_only_in_scope(
    serve: Callable[..., Server],  # noqa: F811
) -> None:
    srv = serve(ui_listen="127.0.0.1:0")
    assert srv.server.web is not None
    admin = srv.token("admin")
    other = srv.token("deployer", "other-team", services=["api"])
    s, art = seed(srv, admin)
    first = create(s, admin, art)
    stream = AgentStream(s, srv.token("agent", "agent-1", cluster="c1"), "a1")
    try:
        assert stream.welcomed.wait(10)
        lease = stream.succeed(first)
        digest = "sha256:" + "a" * 64
        service = live_service(lease, digest)
        stream.send(live_status=agent_pb2.LiveStatus(full=True, services=[service]))
        web = WebClient(srv.server.web.port)
        web.sign_in(admin)
        swarm_service = f"{lease.deployment.stack_name}_web"
        _until(lambda: swarm_service in web.get("/status").body)

        page = _text(web.get("/status").body)
        assert "sha256:aaaaaaaaaaaa" in page and f"/deployments/{first}" in page
        assert ">2/2<" in page and ">healthy<" in page and "drift:" not in page
        assert "drift:" not in _text(web.get("/").body)

        live = web.messages("/status/events")
        try:
            (row,) = _rows(live)
            assert (row["swarm_service"], row["replicas"], row["drift"]) == (
                swarm_service,
                "2/2",
                "",
            )
            # Someone runs another image by hand: the open page hears of it.
            service.image = "web@sha256:" + "c" * 64
            stream.send(live_status=agent_pb2.LiveStatus(full=False, services=[service]))
            (row,) = _rows(live)
            assert row["drift"].startswith("image: runs sha256:cccccccccccc"), row
            assert row["digest"] == "sha256:cccccccccccc"
        finally:
            live.close()

        page = _text(web.get("/status?service=web&env=stage").body)
        assert 'class="drifted"' in page and "drift: image: runs sha256:cccccccccccc" in page
        overview = _text(web.get("/").body)
        assert "drift: image: runs sha256:cccccccccccc" in overview
        assert "/status?service=web&env=stage" in overview
        # The target's history lists the drift record, going on, then ended once healed.
        history = _text(web.get("/services/web/stage").body)
        assert "<h2>Drift</h2>" in history and "goes on" in history
        service.image = "web@" + digest
        stream.send(live_status=agent_pb2.LiveStatus(full=False, services=[service]))
        _until(lambda: ", ended " in _text(web.get("/services/web/stage").body))
        assert "image: runs sha256:cccccccccccc" in _text(web.get("/services/web/stage").body)

        # A deployer of another service sees none of it, on the page or on the stream.
        theirs = WebClient(srv.server.web.port)
        theirs.sign_in(other)
        mine = theirs.get("/status").body
        assert swarm_service not in mine and "No agent has reported" in mine
        their_stream = theirs.messages("/status/events")
        try:
            assert _rows(their_stream) == []
        finally:
            their_stream.close()
        # A bad filter is refused, naming it.
        bad = web.get("/status?env=moon")
        assert bad.status == 400 and "environment" in bad.body
    finally:
        stream.close()

"""The dashboard (`--ui-listen`) against what an attacker would try, over real HTTP on a live
server: guessing tokens at sign-in, planting a session id, forging a POST from another
site, smuggling markup through any free text a user or an agent controls, and reaching it
in clear over the network."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from sami.v1 import agent_pb2, artifact_pb2, deployment_pb2
from sami_control import tlsinit
from sami_control.server import ControlServer, ListenRefused, ServeConfig
from sami_control.web.guard import CSP
from sami_control.web.sessions import (
    ABSOLUTE_TIMEOUT,
    FAILURES_PER_ADDRESS,
    FAILURES_PER_TOKEN,
    IDLE_TIMEOUT,
    LOGIN_WINDOW,
    LoginLimiter,
    Sessions,
)
from tests.security.conftest import AgentStream, Server, create, md, seed
from tests.ui.webclient import COOKIE, WebClient

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


def _ui(serve: Callable[..., Server]) -> tuple[Server, int]:
    srv = serve(ui_listen="127.0.0.1:0")
    assert srv.server.web is not None
    return srv, srv.server.web.port


def _wrong(token: str) -> str:
    """The same token id with another secret."""
    return token[:18] + ("A" if token[18] != "A" else "B") + token[19:]


def test_sign_in_is_rate_limited_per_client_address(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    reader = srv.token("reader")
    guesser = WebClient(port, source="127.0.0.2")
    for i in range(FAILURES_PER_ADDRESS):
        # Each guess names another token id, so only the per-address count can stop them.
        guess = f"sami_{i:012x}_" + "x" * 43
        assert guesser.post("/login", {"token": guess}).status == 401
    refused = guesser.post("/login", {"token": reader})
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in refused.body
    assert COOKIE not in guesser.cookies
    # Another client address is not held back by this one's failures.
    WebClient(port, source="127.0.0.3").sign_in(reader)


def test_sign_in_is_rate_limited_per_token_id(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    reader = srv.token("reader")
    other = srv.token("reader", name="other")
    # Guesses at one token's secret, spread over client addresses.
    for i in range(FAILURES_PER_TOKEN):
        answer = WebClient(port, source=f"127.0.1.{i + 1}").post(
            "/login", {"token": _wrong(reader)}
        )
        assert answer.status == 401
    fresh = WebClient(port, source="127.0.2.1")
    assert fresh.post("/login", {"token": reader}).status == 429
    # Another token signs in from that same address.
    fresh.sign_in(other)


def test_sign_in_always_starts_a_new_session_id(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    reader = srv.token("reader")
    victim = WebClient(port)
    planted = "attacker-chosen-session-id"
    victim.cookies[COOKIE] = planted
    victim.sign_in(reader)
    first = victim.cookies[COOKIE]
    assert first != planted
    # The planted id does not reach a page; the one issued at sign-in does.
    attacker = WebClient(port, cookies={COOKIE: planted})
    assert attacker.get("/").location.startswith("/login")
    assert victim.get("/").status == 200
    # Signing in again replaces the session: the previous id ends.
    victim.sign_in(reader)
    assert victim.cookies[COOKIE] != first
    assert WebClient(port, cookies={COOKIE: first}).get("/").location.startswith("/login")


def test_sign_in_returns_only_to_a_page_of_the_dashboard(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    reader = srv.token("reader")
    where = {}
    for target in (
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/agents?page=x",
    ):
        answer = WebClient(port).post("/login", {"token": reader, "next": target})
        where[target] = answer.location
    assert list(where.values()) == ["/", "/", "/", "/agents?page=x"]


def test_session_cookie_is_httponly_samesite_strict_and_holds_no_token(
    serve: Callable[..., Server],
) -> None:
    srv, port = _ui(serve)
    admin = srv.token("admin")
    web = WebClient(port)
    answer = web.sign_in(admin)
    (cookie,) = answer.set_cookies()
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert admin not in cookie
    assert admin[5:17] not in answer.location
    for path in ("/", "/agents", "/audit"):
        page = web.get(path)
        assert page.status == 200
        assert admin not in page.body
        assert admin[18:] not in page.body


def test_under_tls_the_cookie_is_secure_and_host_only(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    pki = tmp_path / "pki"
    tlsinit.init(pki)
    srv = serve(
        ui_listen="127.0.0.1:0", tls_cert=pki / "server.pem", tls_key=pki / "server-key.pem"
    )
    assert srv.server.web is not None
    tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    web = WebClient(srv.server.web.port, tls=tls)
    answer = web.sign_in(srv.token("reader"))
    (cookie,) = answer.set_cookies()
    assert cookie.startswith("__Host-sami_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = web.get("/")
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    # The same port in clear answers nothing.
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        WebClient(srv.server.web.port).get("/login")


def test_every_answer_carries_the_strict_content_security_policy(
    serve: Callable[..., Server],
) -> None:
    srv, port = _ui(serve)
    web = WebClient(port)
    answers = [web.get("/login"), web.get("/"), web.get("/static/sami.css")]
    web.sign_in(srv.token("reader"))
    answers += [web.get("/"), web.get("/deployments/dep_nope"), web.get("/audit")]
    assert [a.status for a in answers] == [200, 303, 200, 200, 404, 403]
    for a in answers:
        assert a.headers["Content-Security-Policy"] == CSP
        assert a.headers["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP
    assert "script-src 'self'" in CSP
    assert "<script>" not in answers[3].body  # no inline script on a page


def test_a_forged_post_is_refused_and_changes_nothing(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    dep = create(s, admin, art)
    web = WebClient(port)
    web.sign_in(admin)
    csrf = web.get(f"/deployments/{dep}/cancel").csrf()
    path = f"/deployments/{dep}/cancel"
    forged = [
        web.post(path, {"reason": "no token"}),
        web.post(path, {"reason": "wrong token", "csrf": "x" * len(csrf)}),
        web.post(path, {"reason": "other site", "csrf": csrf}, origin="https://evil.example"),
        web.post(path, {"reason": "no origin", "csrf": csrf}, origin=None),
    ]
    assert [a.status for a in forged] == [403, 403, 403, 403]
    got = s.dep.GetDeployment(deployment_pb2.GetDeploymentRequest(name=dep), metadata=md(admin))
    assert got.state == deployment_pb2.QUEUED
    # Another session's CSRF token is no good either.
    other = WebClient(port)
    other.sign_in(admin)
    assert other.post(path, {"csrf": csrf}).status == 403
    # The real form goes through.
    ok = web.post(path, {"reason": "really", "csrf": csrf})
    assert (ok.status, ok.location) == (303, f"/deployments/{dep}")
    got = s.dep.GetDeployment(deployment_pb2.GetDeploymentRequest(name=dep), metadata=md(admin))
    assert got.state == deployment_pb2.CANCELLED


def test_sign_in_from_another_site_is_refused(serve: Callable[..., Server]) -> None:
    srv, port = _ui(serve)
    web = WebClient(port)
    answer = web.post("/login", {"token": srv.token("admin")}, origin="https://evil.example")
    assert answer.status == 403
    assert COOKIE not in web.cookies


def test_free_text_reaches_every_page_escaped(serve: Callable[..., Server]) -> None:
    """Deployment reason, artifact labels and provenance, agent progress messages and
    results, audit details: whatever the text, the page shows it as text."""
    srv, port = _ui(serve)
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    art = s.art.RegisterArtifact(
        artifact_pb2.RegisterArtifactRequest(
            artifact=artifact_pb2.Artifact(
                artifact_name="web",
                ref="127.0.0.1:5000/web@sha256:" + "c" * 64,
                provenance=artifact_pb2.Provenance(git_repo=XSS),
                labels={"pr_title": XSS, "commit_message": XSS},
            )
        ),
        metadata=md(admin),
    ).artifact.id
    agent = AgentStream(s, srv.token("agent", cluster="c1"))
    try:
        assert agent.welcomed.wait(10)
        dep = create(s, admin, art, reason=XSS)
        a = agent.wait_for("assignment").assignment
        lease = {"deployment_id": dep, "lease_id": a.lease_id, "epoch": a.deployment.epoch}
        agent.send(ack=agent_pb2.Ack(**lease))
        agent.send(progress=agent_pb2.Progress(**lease, sequence=1, phase="apply", message=XSS))
        n = len(agent.received)
        agent.send(result=agent_pb2.Result(**lease, outcome=agent_pb2.OUTCOME_FAILED, reason=XSS))
        agent.wait_for("done", after=n)
    finally:
        agent.close()
    queued = create(s, admin, art)
    web = WebClient(port)
    web.sign_in(admin)
    csrf = web.get(f"/deployments/{queued}/cancel").csrf()
    assert web.post(f"/deployments/{queued}/cancel", {"reason": XSS, "csrf": csrf}).status == 303
    pages = {
        "deployment": web.get(f"/deployments/{dep}"),
        "history": web.get("/services/web/stage"),
        "overview": web.get("/"),
        "audit": web.get("/audit?service=web"),
    }
    for name, page in pages.items():
        assert page.status == 200, name
        assert "<script>alert" not in page.body, name
        assert "<img src=x" not in page.body, name
    # Each place the text is shown, it is shown escaped.
    deployment = pages["deployment"].body
    assert deployment.count(ESCAPED) >= 6  # reason, git repo, 2 labels, progress, status
    assert ESCAPED in pages["history"].body
    assert ESCAPED in pages["audit"].body
    # The live stream carries the text as JSON, never as a page: the browser cannot render
    # it (nosniff), and the page's script puts it in as text (textContent).
    live = web.get(f"/deployments/{dep}/events")
    assert live.headers["Content-Type"].startswith("text/event-stream")
    assert live.headers["X-Content-Type-Options"] == "nosniff"
    assert json.dumps(XSS) in live.body


def test_the_live_stream_resumes_after_last_event_id_without_gaps_or_duplicates(
    serve: Callable[..., Server],
) -> None:
    srv, port = _ui(serve)
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    dep = create(s, admin, art)
    s.dep.CancelDeployment(
        deployment_pb2.CancelDeploymentRequest(name=dep, reason="r"), metadata=md(admin)
    )
    web = WebClient(port)
    web.sign_in(admin)
    whole = web.get(f"/deployments/{dep}/events")
    ids = [int(i) for i in re.findall(r"^id: (\d+)$", whole.body, re.M)]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2
    assert whole.body.rstrip().endswith("event: end\ndata: {}")
    resumed = web.get(f"/deployments/{dep}/events", **{"Last-Event-ID": "1"})
    assert [int(i) for i in re.findall(r"^id: (\d+)$", resumed.body, re.M)] == ids[1:]


def test_a_stream_cut_mid_deployment_resumes_after_last_event_id(
    serve: Callable[..., Server],
) -> None:
    """While the agent reports: the browser loses the stream, progress goes on, and the
    reconnect (Last-Event-ID) gets every event after the last it had, once."""
    srv, port = _ui(serve)
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    agent = AgentStream(s, srv.token("agent", cluster="c1"))
    web = WebClient(port)
    web.sign_in(admin)
    try:
        assert agent.welcomed.wait(10)
        dep = create(s, admin, art)
        a = agent.wait_for("assignment").assignment
        lease = {"deployment_id": dep, "lease_id": a.lease_id, "epoch": a.deployment.epoch}
        agent.send(ack=agent_pb2.Ack(**lease))

        def progress(n: int) -> None:
            agent.send(progress=agent_pb2.Progress(**lease, sequence=n, message=f"step {n}"))

        stream = web.events(f"/deployments/{dep}/events")
        seen: list[int] = []
        for kind, ident in stream:
            if kind == "progress":
                seen.append(int(ident))
                if int(ident) == 3:  # ASSIGNED, IN_PROGRESS... then the first step
                    progress(1)
                if len(seen) == 4:
                    break
        stream.close()  # the connection drops
        for n in (2, 3, 4):
            progress(n)
        n = len(agent.received)
        agent.send(result=agent_pb2.Result(**lease, outcome=agent_pb2.OUTCOME_SUCCEEDED))
        agent.wait_for("done", after=n)
        resumed = list(web.events(f"/deployments/{dep}/events", last_event_id=seen[-1]))
    finally:
        agent.close()
    ids = [int(i) for kind, i in resumed if kind == "progress"]
    assert seen == [1, 2, 3, 4]
    assert ids == list(range(5, ids[-1] + 1)) and len(ids) == 4  # 3 steps and SUCCEEDED
    assert resumed[-1] == ("end", "")


def test_a_non_loopback_dashboard_needs_tls_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(ListenRefused, match=r"refusing to serve the dashboard on 0\.0\.0\.0:0"):
        ControlServer(ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path, ui_listen="0.0.0.0:0"))
    with pytest.raises(ListenRefused, match=r"--ui-listen: 'localhost' is not HOST:PORT"):
        ControlServer(ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path, ui_listen="localhost"))


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sessions_expire_when_idle_and_after_the_absolute_limit() -> None:
    clock = _Clock()
    sessions = Sessions(clock)
    idle = sessions.start("sami_token")
    busy = sessions.start("sami_token")
    for _ in range(int(ABSOLUTE_TIMEOUT // (IDLE_TIMEOUT / 2))):
        clock.t += IDLE_TIMEOUT / 2
        if clock.t - 1000.0 < ABSOLUTE_TIMEOUT:
            assert sessions.get(busy.id) is busy  # kept alive by its requests
    assert sessions.get(idle.id) is None and idle.ended
    clock.t = 1000.0 + ABSOLUTE_TIMEOUT + 1
    assert sessions.get(busy.id) is None and busy.ended


def test_the_sign_in_limit_lifts_once_the_window_has_passed() -> None:
    clock = _Clock()
    limiter = LoginLimiter(clock)
    for _ in range(FAILURES_PER_ADDRESS):
        limiter.failed("127.0.0.9", "garbage")
    assert limiter.retry_after("127.0.0.9", "other") == LOGIN_WINDOW
    clock.t += LOGIN_WINDOW / 2
    assert limiter.retry_after("127.0.0.9", "other") == LOGIN_WINDOW / 2
    clock.t += LOGIN_WINDOW / 2
    assert limiter.retry_after("127.0.0.9", "other") == 0

"""Tokens over the API (TokenService): created by admins, shown once, listed without
secrets, revoked at once, also on the streams they hold open; expiry ends streams too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sami.v1 import admin_pb2, deployment_pb2
from sami_client import cli
from sami_control import offline
from sami_control.core.settings import Settings
from sami_control.core.token_secrets import hash_secret
from tests.security.conftest import AgentStream, Server, Stubs, create, md, seed


def fields_of(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out: list[str] = []
    for d in status.details if status else ():
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):
            out += [v.field for v in br.field_violations]
    return out


def code_of(fn: Callable[[], object]) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def new_token(s: Stubs, admin: str, **kw: object) -> admin_pb2.CreateTokenResponse:
    return s.tok.CreateToken(admin_pb2.CreateTokenRequest(**kw), metadata=md(admin))  # type: ignore[arg-type]


def test_create_list_revoke_over_the_api(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin", "root")
    s, art = seed(srv, admin)
    made = new_token(
        s,
        admin,
        role=admin_pb2.TOKEN_ROLE_DEPLOYER,
        display_name="ci-web",
        services=["web"],
        environments=["stage"],
        expires_in=duration_pb2.Duration(seconds=3600),
    )
    secret = made.secret
    assert secret.startswith(f"sami_{made.token.id}_")
    assert made.token.created_by == "root"
    assert made.token.HasField("expire_time") and not made.token.HasField("revoke_time")
    # The new token works, within its scope only.
    dep = create(s, secret, art)
    assert dep.startswith("dep_")
    assert code_of(lambda: create(s, secret, art, env="production")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Listing never carries a secret or a hash.
    listed = s.tok.ListTokens(admin_pb2.ListTokensRequest(), metadata=md(admin))
    wire = listed.SerializeToString()
    raw = secret.split("_", 2)[2]
    assert raw.encode() not in wire and hash_secret(raw).encode() not in wire
    assert made.token.id in [t.id for t in listed.tokens]
    # Revoked: refused at once.
    revoked = s.tok.RevokeToken(
        admin_pb2.RevokeTokenRequest(name=f"tokens/{made.token.id}"), metadata=md(admin)
    )
    assert revoked.HasField("revoke_time")
    with pytest.raises(grpc.RpcError) as ei:
        create(s, secret, art)
    assert ei.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (ei.value.details() or "")
    # Revoked tokens are listed only when asked for.
    assert made.token.id not in [
        t.id for t in s.tok.ListTokens(admin_pb2.ListTokensRequest(), metadata=md(admin)).tokens
    ]
    assert made.token.id in [
        t.id
        for t in s.tok.ListTokens(
            admin_pb2.ListTokensRequest(include_revoked=True), metadata=md(admin)
        ).tokens
    ]
    # Revoking twice is refused, as is an unknown id.
    assert (
        code_of(
            lambda: s.tok.RevokeToken(
                admin_pb2.RevokeTokenRequest(name=made.token.id), metadata=md(admin)
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        code_of(
            lambda: s.tok.RevokeToken(
                admin_pb2.RevokeTokenRequest(name="0" * 12), metadata=md(admin)
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_only_admins_manage_tokens(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    victim = new_token(s, admin, role=admin_pb2.TOKEN_ROLE_READER).token.id
    for role, kw in (("deployer", {}), ("reader", {}), ("agent", {"cluster": "c1"})):
        t = srv.token(role, **kw)
        assert (
            code_of(lambda t=t: new_token(s, t, role=admin_pb2.TOKEN_ROLE_ADMIN))
            == grpc.StatusCode.PERMISSION_DENIED
        ), role
        assert (
            code_of(lambda t=t: s.tok.ListTokens(admin_pb2.ListTokensRequest(), metadata=md(t)))
            == grpc.StatusCode.PERMISSION_DENIED
        ), role
        assert (
            code_of(
                lambda t=t: s.tok.RevokeToken(
                    admin_pb2.RevokeTokenRequest(name=victim), metadata=md(t)
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        ), role
        assert (
            code_of(lambda t=t: s.audit.ListAudit(admin_pb2.ListAuditRequest(), metadata=md(t)))
            == grpc.StatusCode.PERMISSION_DENIED
        ), role


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({}, "role"),
        ({"role": 9}, "role"),
        ({"role": admin_pb2.TOKEN_ROLE_AGENT}, "cluster"),
        ({"role": admin_pb2.TOKEN_ROLE_AGENT, "cluster": "C1"}, "cluster"),
        ({"role": admin_pb2.TOKEN_ROLE_READER, "cluster": "c1"}, "cluster"),
        ({"role": admin_pb2.TOKEN_ROLE_READER, "services": ["web"]}, "services"),
        ({"role": admin_pb2.TOKEN_ROLE_DEPLOYER, "services": ["Web"]}, "services[0]"),
        ({"role": admin_pb2.TOKEN_ROLE_DEPLOYER, "environments": ["prod"]}, "environments[0]"),
        ({"role": admin_pb2.TOKEN_ROLE_ADMIN, "display_name": "a\u202eb"}, "display_name"),
        ({"role": admin_pb2.TOKEN_ROLE_ADMIN, "display_name": "x" * 101}, "display_name"),
        (
            {"role": admin_pb2.TOKEN_ROLE_ADMIN, "expires_in": duration_pb2.Duration(seconds=-5)},
            "expires_in",
        ),
        (
            {
                "role": admin_pb2.TOKEN_ROLE_ADMIN,
                "expires_in": duration_pb2.Duration(seconds=20 * 366 * 86400),
            },
            "expires_in",
        ),
    ],
)
def test_create_token_validation(
    serve: Callable[..., Server], request_kw: dict[str, object], field: str
) -> None:
    srv = serve()
    admin = srv.token("admin")
    offline.add_cluster(srv.data, "c1", ["stage"])
    s = Stubs(srv.channel())
    before = len(offline.list_tokens(srv.data))
    with pytest.raises(grpc.RpcError) as ei:
        new_token(s, admin, **request_kw)
    assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(ei.value) == [field]
    assert len(offline.list_tokens(srv.data)) == before


def test_agent_token_needs_an_existing_cluster(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s = Stubs(srv.channel())
    assert (
        code_of(lambda: new_token(s, admin, role=admin_pb2.TOKEN_ROLE_AGENT, cluster="nope"))
        == grpc.StatusCode.NOT_FOUND
    )


# Streams -------------------------------------------------------------------------------


class WatchThread:
    """A WatchDeployment stream read in a thread; `code` is how it ended."""

    def __init__(self, s: Stubs, token: str, dep: str) -> None:
        self.items: list[object] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.opened = threading.Event()
        self.done = threading.Event()
        self._stream = s.dep.WatchDeployment(
            deployment_pb2.WatchDeploymentRequest(name=dep), metadata=md(token), timeout=30
        )
        threading.Thread(target=self._run, daemon=True).start()
        assert self.opened.wait(10), "the watch did not start"

    def _run(self) -> None:
        try:
            for item in self._stream:
                self.items.append(item)
                self.opened.set()
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            self.code = err.code()
            self.details = err.details() or ""
        finally:
            self.opened.set()
            self.done.set()

    def cancel(self) -> None:
        self._stream.cancel()
        self.done.wait(5)


def test_revoking_a_token_ends_its_open_streams_at_once(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    reader = new_token(s, admin, role=admin_pb2.TOKEN_ROLE_READER, display_name="dashboard")
    agent = new_token(s, admin, role=admin_pb2.TOKEN_ROLE_AGENT, cluster="c1")
    other_reader = srv.token("reader", "other")
    dep = create(s, admin, art)

    watch = WatchThread(s, reader.secret, dep)
    other = WatchThread(s, other_reader, dep)
    stream = AgentStream(s, agent.secret)
    assert stream.welcomed.wait(10)
    stream.wait_for("assignment")  # it works: the queued deployment was assigned to it

    t0 = time.monotonic()
    s.tok.RevokeToken(admin_pb2.RevokeTokenRequest(name=reader.token.id), metadata=md(admin))
    s.tok.RevokeToken(admin_pb2.RevokeTokenRequest(name=agent.token.id), metadata=md(admin))
    assert watch.done.wait(5) and stream.done.wait(5)
    assert time.monotonic() - t0 < 2.0
    assert watch.code is grpc.StatusCode.UNAUTHENTICATED, watch.code
    assert "revoked" in watch.details
    assert stream.code is grpc.StatusCode.UNAUTHENTICATED, stream.code
    assert "revoked" in stream.details
    # Another token's stream is untouched.
    assert not other.done.is_set()
    other.cancel()
    # The core forgot the revoked token's streams and the agent's session.
    assert srv.call(lambda: srv.server.core.streams.of_token(agent.token.id)) == []
    assert srv.call(lambda: srv.server.core.sessions.all()) == []
    # Reconnecting with the revoked token is refused.
    again = AgentStream(s, agent.secret, "a2")
    assert again.done.wait(5)
    assert again.code is grpc.StatusCode.UNAUTHENTICATED


def test_a_token_revoked_offline_loses_its_streams_too(serve: Callable[..., Server]) -> None:
    srv = serve(Settings(token_recheck_interval=0.2))
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    issued = offline.add_token(srv.data, "reader", "board")
    dep = create(s, admin, art)
    watch = WatchThread(s, issued.plaintext, dep)
    offline.revoke_token(srv.data, issued.record.id)  # another process, straight on the DB
    assert watch.done.wait(5)
    assert watch.code is grpc.StatusCode.UNAUTHENTICATED


def test_an_expired_token_loses_its_streams(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    short = new_token(
        s,
        admin,
        role=admin_pb2.TOKEN_ROLE_AGENT,
        cluster="c1",
        expires_in=duration_pb2.Duration(seconds=1, nanos=500_000_000),
    )
    watcher = new_token(
        s,
        admin,
        role=admin_pb2.TOKEN_ROLE_READER,
        expires_in=duration_pb2.Duration(seconds=1, nanos=500_000_000),
    )
    dep = create(s, admin, art)
    watch = WatchThread(s, watcher.secret, dep)
    stream = AgentStream(s, short.secret)
    assert stream.welcomed.wait(10)
    assert watch.done.wait(6) and stream.done.wait(6)
    assert watch.code is grpc.StatusCode.UNAUTHENTICATED and "expired" in watch.details
    assert stream.code is grpc.StatusCode.UNAUTHENTICATED and "expired" in stream.details


def test_open_streams_per_token_are_limited(serve: Callable[..., Server]) -> None:
    srv = serve(Settings(max_streams_per_token=2))
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    reader = srv.token("reader")
    dep = create(s, admin, art)
    w1, w2 = WatchThread(s, reader, dep), WatchThread(s, reader, dep)
    with pytest.raises(grpc.RpcError) as ei:
        next(
            iter(
                s.dep.WatchDeployment(
                    deployment_pb2.WatchDeploymentRequest(name=dep), metadata=md(reader), timeout=5
                )
            )
        )
    assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-streams-per-token" in (ei.value.details() or "")
    # Another token is not affected; a closed stream frees its place.
    w3 = WatchThread(s, admin, dep)
    w1.cancel()
    deadline = time.monotonic() + 5
    while True:
        try:
            w4 = WatchThread(s, reader, dep)
            break
        except AssertionError:
            assert time.monotonic() < deadline
    for w in (w2, w3, w4):
        assert not w.done.is_set()
        w.cancel()
    # Agent streams are limited the same way, per token.
    agent = srv.token("agent", cluster="c1")
    a1, a2 = AgentStream(s, agent, "a1"), AgentStream(s, agent, "a2")
    assert a1.welcomed.wait(5) and a2.welcomed.wait(5)
    a3 = AgentStream(s, agent, "a3")
    assert a3.done.wait(5) and a3.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same agent id reconnecting replaces its old stream: not refused.
    a1b = AgentStream(s, agent, "a1")
    assert a1b.welcomed.wait(5)
    for a in (a1, a2, a1b):
        a.close()


# CLI -----------------------------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    srv: Server,
    token: str,
    *argv: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("SAMI_ADDR", srv.addr)
    monkeypatch.setenv("SAMI_TOKEN", token)
    for k in ("SAMI_CA", "SAMI_CLIENT_CERT", "SAMI_CLIENT_KEY", "GITHUB_ACTIONS"):
        monkeypatch.delenv(k, raising=False)
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_sami_token_and_audit_commands(
    serve: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv = serve()
    admin = srv.token("admin", "root")
    offline.add_cluster(srv.data, "c1", ["stage"])
    rc, out, err = run_cli(
        monkeypatch,
        capsys,
        srv,
        admin,
        "token",
        "create",
        "--role",
        "deployer",
        "--name",
        "ci-web",
        "--service",
        "web",
        "--env",
        "stage",
        "--expires-in",
        "90d",
    )
    assert rc == 0, err
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("sami_")
    assert "shown once" in err and "ci-web" in err
    token_id = secret.split("_")[1]

    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "token", "list")
    assert rc == 0, err
    assert token_id in out and "ci-web" in out and "deployer" in out
    assert secret.split("_", 2)[2] not in out

    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "token", "list", "--output", "json")
    assert rc == 0 and '"display_name": "ci-web"' in out

    # A deployer may not create tokens: exit 2, PERMISSION_DENIED.
    rc, out, err = run_cli(monkeypatch, capsys, srv, secret, "token", "create", "--role", "admin")
    assert rc == 2 and "PERMISSION_DENIED" in err

    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "token", "revoke", token_id)
    assert rc == 0 and "revoked" in out
    rc, out, err = run_cli(monkeypatch, capsys, srv, secret, "token", "list")
    assert rc == 3 and "UNAUTHENTICATED" in err

    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "audit", "--since", "1h")
    assert rc == 0, err
    assert "token.create" in out and "token.revoke" in out
    assert "PERMISSION_DENIED" in out  # the deployer's refused token create
    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "audit", "--since", "2999-01-01T00:00")
    assert rc == 0 and out.strip() == "(none)"
    rc, out, err = run_cli(monkeypatch, capsys, srv, admin, "audit", "--since", "yesterday")
    assert rc == 2

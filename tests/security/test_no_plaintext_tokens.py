"""A token's plaintext is shown once, to whoever created it, and never lands anywhere else:
not in the database (only a hash), not in the server's log, not in error messages."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc

from sami.v1 import admin_pb2, agent_pb2, deployment_pb2
from sami_control.core.token_secrets import hash_secret
from tests.harness import ControlPlane, sami
from tests.security.conftest import Stubs, md


def _calls(s: Stubs, token: str) -> list[str]:
    """Use a token every way a client might; returns the error messages the server sent."""
    errors: list[str] = []
    calls = [
        lambda: s.dep.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(token)),
        lambda: s.tok.ListTokens(admin_pb2.ListTokensRequest(), metadata=md(token)),
        lambda: next(
            iter(
                s.agent.Connect(
                    iter([agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="a1"))]),
                    metadata=md(token),
                    timeout=5,
                )
            )
        ),
    ]
    for call in calls:
        try:
            call()
        except (grpc.RpcError, StopIteration) as err:
            if isinstance(err, grpc.RpcError):
                errors.append(f"{err.code().name}: {err.details()}")
    return errors


def test_plaintext_tokens_are_in_no_database_log_or_error(tmp_path: Path) -> None:
    control = ControlPlane(tmp_path)
    control.cluster("c1", "stage")
    admin = control.token("admin", name="root")
    control.start()
    try:
        secrets: list[str] = [admin]
        with grpc.insecure_channel(control.addr) as ch:
            s = Stubs(ch)
            made = {
                role: s.tok.CreateToken(
                    admin_pb2.CreateTokenRequest(role=value, **kw),  # type: ignore[arg-type]
                    metadata=md(admin),
                )
                for role, value, kw in (
                    ("reader", admin_pb2.TOKEN_ROLE_READER, {}),
                    ("agent", admin_pb2.TOKEN_ROLE_AGENT, {"cluster": "c1"}),
                    ("deployer", admin_pb2.TOKEN_ROLE_DEPLOYER, {"services": ["web"]}),
                )
            }
            secrets += [m.secret for m in made.values()]
            r = sami(control, admin, "token", "create", "--role", "reader", "--name", "cli")
            assert r.rc == 0, r.err
            secrets.append(r.last)

            errors: list[str] = []
            for t in secrets:
                errors += _calls(s, t)
                # The same id with another secret, a truncated token, a mangled one.
                token_id, raw = t.split("_")[1], t.split("_", 2)[2]
                errors += _calls(s, f"sami_{token_id}_{raw[::-1]}")
                errors += _calls(s, t[:-1])
                errors += _calls(s, t + "x")
            for m in made.values():
                s.tok.RevokeToken(admin_pb2.RevokeTokenRequest(name=m.token.id), metadata=md(admin))
                errors += _calls(s, m.secret)
            # Errors did happen (refusals), and they never quote a secret.
            assert any("UNAUTHENTICATED" in e for e in errors)
            assert any("PERMISSION_DENIED" in e for e in errors)
    finally:
        control.kill(signal.SIGTERM)
    time.sleep(0.2)
    files = sorted(control.data.glob("sami.db*"))
    assert files, "no database files"
    stored = b"".join(f.read_bytes() for f in files)
    log = control.log_path.read_bytes()
    assert b"token_revoked" in log  # the log is the server's, with debug lines in it
    for t in secrets:
        raw = t.split("_", 2)[2]
        for where, blob in (("database", stored), ("server log", log)):
            assert t.encode() not in blob, f"a token is in the {where}"
            assert raw.encode() not in blob, f"a token's secret is in the {where}"
        for e in errors:
            assert raw not in e
        # Only its hash is stored (so we did look at the right files).
        assert hash_secret(raw).encode() in stored

"""`sami token ...` and `sami audit`: administration over the API (admin tokens only).

    sami token create --role ROLE [--name N] [--cluster C] [--service S]... [--env E]...
                      [--expires-in 90d]
    sami token list [--all]
    sami token revoke ID
    sami audit [--since 1d2h|2026-01-31T12:00] [--service S] [--limit N]

`token create` prints what it made on stderr and the token itself, once, as the last line of
stdout (with --output json: `{"token": {...}, "secret": "sami_..."}`); only its hash is stored.
`token revoke` takes effect at once, also on the streams the token has open.
`audit` lists every change and every refused change, oldest first.

`register(subparsers)` adds the commands to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from sami_client import argtypes, render
from sami_client.context import Context
from sami_client.errors import ExitCode, SamiError
from sami_client.failover import FailoverChannel
from sami_client.pb import admin_pb2, admin_pb2_grpc
from sami_common.dial import Endpoint, TLSFileError

CALL_TIMEOUT = 30.0
ROLES = {
    "admin": admin_pb2.TOKEN_ROLE_ADMIN,
    "agent": admin_pb2.TOKEN_ROLE_AGENT,
    "deployer": admin_pb2.TOKEN_ROLE_DEPLOYER,
    "reader": admin_pb2.TOKEN_ROLE_READER,
}


class AdminClient:
    """TokenService and AuditService, with errors as SamiError."""

    def __init__(self, endpoint: Endpoint, timeout: float = CALL_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # Several addresses: an unreachable replica is skipped as for every other command.
        self._channel = FailoverChannel(endpoint)
        try:
            self._channel.current()  # Reads the TLS files now, to report them as bad input.
        except TLSFileError as exc:
            raise SamiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        self._tokens = admin_pb2_grpc.TokenServiceStub(self._channel)
        self._audit = admin_pb2_grpc.AuditServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.endpoint.metadata(), timeout=self.timeout)
        except grpc.RpcError as err:
            raise SamiError.from_rpc_error(err) from err

    def create_token(self, request: admin_pb2.CreateTokenRequest) -> admin_pb2.CreateTokenResponse:
        response: admin_pb2.CreateTokenResponse = self._call(self._tokens.CreateToken, request)
        return response

    def list_tokens(self, include_revoked: bool = False) -> list[admin_pb2.Token]:
        response: admin_pb2.ListTokensResponse = self._call(
            self._tokens.ListTokens, admin_pb2.ListTokensRequest(include_revoked=include_revoked)
        )
        return list(response.tokens)

    def revoke_token(self, name: str) -> admin_pb2.Token:
        token: admin_pb2.Token = self._call(
            self._tokens.RevokeToken, admin_pb2.RevokeTokenRequest(name=name)
        )
        return token

    def list_audit(
        self,
        since: datetime.datetime | None = None,
        service: str = "",
        page_size: int = 200,
    ) -> Iterator[admin_pb2.AuditEntry]:
        """Every matching entry, oldest first, fetching pages as the caller iterates."""
        request = admin_pb2.ListAuditRequest(service=service, page_size=page_size)
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        while True:
            page: admin_pb2.ListAuditResponse = self._call(self._audit.ListAudit, request)
            yield from page.entries
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


def _timestamp(when: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(datetime.UTC).replace(tzinfo=None))
    return ts


@contextmanager
def _client(ctx: Context) -> Iterator[AdminClient]:
    client = AdminClient(ctx.endpoint)
    try:
        yield client
    finally:
        client.close()


def role_name(role: int) -> str:
    return render.enum_name(admin_pb2.TokenRole.DESCRIPTOR, role)


def scope(t: admin_pb2.Token) -> str:
    if t.cluster:
        return f"cluster {t.cluster}"
    parts = []
    if t.services:
        parts.append(",".join(t.services))
    if t.environments:
        parts.append("->" + ",".join(t.environments))
    return " ".join(parts) or "-"


def tokens_table(tokens: list[admin_pb2.Token]) -> str:
    rows = [
        (
            t.id,
            t.display_name,
            role_name(t.role),
            scope(t),
            render.timestamp(t.expire_time) if t.HasField("expire_time") else "never",
            render.timestamp(t.revoke_time) if t.HasField("revoke_time") else "-",
        )
        for t in tokens
    ]
    return render.table(("ID", "NAME", "ROLE", "SCOPE", "EXPIRES", "REVOKED"), rows)


def audit_table(entries: list[admin_pb2.AuditEntry]) -> str:
    rows = [
        (
            render.timestamp(e.time),
            f"{e.token_name} ({e.token_id})",
            e.action,
            e.target,
            e.outcome,
            e.peer or "-",
            e.request_id or "-",
            e.detail[:120],
        )
        for e in entries
    ]
    return render.table(
        ("TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "PEER", "REQUEST", "DETAIL"), rows
    )


# Handlers


def _token_create(args: argparse.Namespace, ctx: Context) -> int:
    request = admin_pb2.CreateTokenRequest(
        role=ROLES[args.role],
        display_name=args.name,
        cluster=args.cluster,
        services=args.service,
        environments=args.environment,
    )
    if args.expires_in:
        request.expires_in.CopyFrom(duration_pb2.Duration(seconds=int(args.expires_in)))
    with _client(ctx) as client:
        response = client.create_token(request)
    t = response.token
    if ctx.json_output:
        ctx.console.print(render.to_json(response))
        return int(ExitCode.SUCCEEDED)
    expiry = f", expires {render.timestamp(t.expire_time)}" if t.HasField("expire_time") else ""
    ctx.console.note(
        f"created token {t.id} ({t.display_name}) role={role_name(t.role)} scope={scope(t)}"
        f"{expiry}; it is shown once, store it now:"
    )
    ctx.console.print(response.secret)
    return int(ExitCode.SUCCEEDED)


def _token_list(args: argparse.Namespace, ctx: Context) -> int:
    with _client(ctx) as client:
        tokens = client.list_tokens(include_revoked=args.all)
    ctx.show(tokens_table(tokens), [render.to_dict(t) for t in tokens])
    return int(ExitCode.SUCCEEDED)


def _token_revoke(args: argparse.Namespace, ctx: Context) -> int:
    with _client(ctx) as client:
        t = client.revoke_token(args.id)
    ctx.show(f"revoked token {t.id} ({t.display_name}); its open streams were closed", t)
    return int(ExitCode.SUCCEEDED)


def _audit(args: argparse.Namespace, ctx: Context) -> int:
    with _client(ctx) as client:
        entries = []
        for e in client.list_audit(args.since, args.service):
            entries.append(e)
            if args.limit and len(entries) >= args.limit:
                break
    ctx.show(audit_table(entries), [render.to_dict(e) for e in entries])
    return int(ExitCode.SUCCEEDED)


def register(subparsers: Any) -> None:
    """Add `token` (create, list, revoke) and `audit` to the CLI's subparsers."""
    token = subparsers.add_parser(
        "token",
        help="create, list and revoke tokens (admin)",
        description="Tokens over the API; an admin token is needed. (Before any token exists, "
        "`sami-control token create --role admin` makes the first one offline.)",
    )
    commands = token.add_subparsers(dest="token_command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser(
        "create",
        help="create a token; it is printed once, as the last line of stdout",
        description="Create a token. The token is printed once, as the last line of stdout; "
        "only its hash is stored, so it cannot be shown again.",
    )
    p.add_argument("--role", required=True, choices=sorted(ROLES))
    p.add_argument("--name", default="", help="who or what uses it, e.g. ci-web")
    p.add_argument("--cluster", default="", help="agent tokens: the cluster it serves")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        help="deployer tokens: a service it may deploy (repeatable; default any)",
    )
    p.add_argument(
        "--env",
        "--environment",
        dest="environment",
        action="append",
        default=[],
        help="deployer tokens: an environment it may deploy to (repeatable; default any)",
    )
    p.add_argument(
        "--expires-in",
        type=argtypes.duration,
        default=None,
        metavar="DURATION",
        help="e.g. 90d, 12h, 1d12h (default: never)",
    )
    p.set_defaults(run=_token_create)

    p = commands.add_parser("list", help="list tokens (never their secrets)")
    p.add_argument("--all", action="store_true", help="also revoked tokens")
    p.set_defaults(run=_token_list)

    p = commands.add_parser(
        "revoke", help="revoke a token now; its open streams (agents, watches) are closed"
    )
    p.add_argument("id", help="the token id (`sami token list`), or tokens/ID")
    p.set_defaults(run=_token_revoke)

    p = subparsers.add_parser(
        "audit",
        help="who changed what, and what was refused (admin)",
        description="The audit log, oldest first: every change and every refused change, "
        "with the token, the peer address and the request id.",
    )
    p.add_argument(
        "--since",
        type=argtypes.since,
        default=None,
        metavar="WHEN",
        help="only entries from then on: a duration ago (1h, 1d2h) or an ISO time",
    )
    p.add_argument("--service", default="", help="only entries about this service")
    p.add_argument(
        "--limit", type=argtypes.limit, default=0, help="at most N entries (default all)"
    )
    p.set_defaults(run=_audit)

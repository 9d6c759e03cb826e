"""The audit log: who asked for which change, from where, and how it ended.

A change that succeeds is recorded in the same transaction as the change itself
(`Audit.ok`), so the log never claims a change that was rolled back, nor misses one that
committed. A change that is refused writes nothing, so its entry is written on its own, in a
transaction of its own, after the refusal: a service method that changes something is
declared `@audited(action, subject)`, and the decorator records any DomainError it raises.
That is the one mechanism for every mutation of the core, agents' reports included.
Requests that fail authentication are not recorded here (that would let anyone without a
token write to the database); the server logs them instead.

Values in entries may come from a refused request, i.e. from anybody with a token: they are
bounded and their control and invisible characters escaped before they are stored.
"""

from __future__ import annotations

import functools
import inspect
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import structlog

from sami_control.core import authz, paging, validation
from sami_control.core.authz import Action
from sami_control.core.errors import DomainError, InvalidArgument
from sami_control.core.model import AuditEntry, Principal
from sami_control.core.store import Store, Tx

log = structlog.get_logger("sami.audit")

OK = "ok"
MAX_TARGET = 200
MAX_DETAIL = 1000


def clean(value: str, limit: int) -> str:
    """`value` with control/invisible characters escaped (`\\u202e`), cut to `limit`."""
    if value.isprintable():  # the common case: none of the categories escaped below
        return value if len(value) <= limit else value[: limit - 1] + "…"
    out: list[str] = []
    for ch in value[: limit * 2]:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(ch.encode("unicode_escape", "backslashreplace").decode())
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry(
    who: Principal,
    action: str,
    target: str,
    now: float,
    *,
    outcome: str = OK,
    detail: str = "",
    service: str = "",
    request_id: str = "",
) -> AuditEntry:
    return AuditEntry(
        time=now,
        token_id=who.token_id,
        token_name=clean(who.name, 100),
        action=action,
        target=clean(target, MAX_TARGET),
        outcome=outcome,
        detail=clean(detail, MAX_DETAIL),
        peer=clean(who.peer, 100),
        request_id=clean(request_id or who.request_id, 128),
        service=clean(service, 63),
    )


class Audit:
    """The audit log: entries of changes (in the change's transaction) and of refusals (in
    a transaction of their own), and reading it back (ListAudit)."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def ok(
        self,
        tx: Tx,
        who: Principal,
        action: str,
        target: str,
        *,
        detail: str = "",
        service: str = "",
        request_id: str = "",
    ) -> None:
        """A successful change, inside the change's own transaction."""
        await tx.append_audit(
            entry(
                who,
                action,
                target,
                self._clock(),
                detail=detail,
                service=service,
                request_id=request_id,
            )
        )

    async def refused(self, subject: Subject, action: str, exc: DomainError) -> None:
        """The entry of a refused change, in a transaction of its own (the refused change's
        own transaction has rolled back by then)."""
        e = entry(
            subject.who,
            action,
            subject.target,
            self._clock(),
            outcome=exc.code,
            detail=exc.message,
            service=subject.service,
            request_id=subject.request_id,
        )
        try:
            async with self._store.tx() as tx:
                await tx.append_audit(e)
        except Exception:  # never hide the refusal behind a failure to record it
            log.exception("audit_write_failed", action=action, outcome=exc.code)

    async def list(
        self, who: Principal, since: float, service: str, page_size: int, page_token: str
    ) -> tuple[list[AuditEntry], str]:
        """Entries at or after `since` (about `service`, if given), oldest first."""
        authz.require(who, Action.READ_AUDIT)
        if service:
            validation.name("service", service, "service name")
        if not 0 <= since < 1e11:
            raise InvalidArgument("since", "must be a time after 1970")
        after, limit = paging.parse_page(page_token, page_size, first=0)
        async with self._store.tx() as tx:
            rows = await tx.list_audit(since, limit + 1, after, service)
        return paging.cut(rows, limit, lambda e: e.seq)


@dataclass(frozen=True, slots=True)
class Subject:
    """What a refused change was about, for its audit entry."""

    who: Principal
    target: str
    service: str = ""
    request_id: str = ""


class _Audited(Protocol):
    """A service whose methods are @audited: it reaches the log through its context."""

    @property
    def audit(self) -> Audit: ...


S = TypeVar("S", bound=_Audited)
P = ParamSpec("P")
R = TypeVar("R")


def audited(
    action: str, subject: Callable[..., Subject]
) -> Callable[
    [Callable[Concatenate[S, P], Awaitable[R]]], Callable[Concatenate[S, P], Coroutine[Any, Any, R]]
]:
    """Declare a method of a service (a coroutine function) a change named `action`: a
    DomainError it raises is recorded as a refusal, about what `subject(service, *args,
    **kwargs)` names, before it goes on to the caller. The method records its success
    itself (`Audit.ok`), in its own transaction, since only it knows what it changed."""

    def decorate(
        fn: Callable[Concatenate[S, P], Awaitable[R]],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            # A plain function's errors would escape the wrapper's await unrecorded (and an
            # async generator's only while it is iterated): refuse it at import time.
            raise TypeError(f"@audited needs a coroutine function, not {fn.__qualname__}")

        @functools.wraps(fn)
        async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(self, *args, **kwargs)
            except DomainError as exc:
                await self.audit.refused(subject(self, *args, **kwargs), action, exc)
                raise

        return wrapper

    return decorate

"""The audit log: who asked for which change, from where, and how it ended.

A change that succeeds is recorded in the same transaction as the change itself (so the log
never claims a change that was rolled back, nor misses one that committed). A change that is
refused writes nothing, so its entry is written on its own, in a transaction of its own,
after the refusal: `refusals()` does that around a mutation. Requests that fail
authentication are not recorded here (that would let anyone without a token write to the
database); the server logs them instead.

Values in entries may come from a refused request, i.e. from anybody with a token: they are
bounded and their control and invisible characters escaped before they are stored.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable, Iterator

import structlog

from sami_control.core.errors import DomainError
from sami_control.core.model import AuditEntry, Principal
from sami_control.storage.base import Store, Tx

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


def record(
    tx: Tx,
    who: Principal,
    action: str,
    target: str,
    now: float,
    *,
    detail: str = "",
    service: str = "",
    request_id: str = "",
) -> None:
    """A successful change, inside the change's own transaction."""
    tx.append_audit(
        entry(who, action, target, now, detail=detail, service=service, request_id=request_id)
    )


@contextlib.contextmanager
def refusals(
    store: Store,
    clock: Callable[[], float],
    who: Principal,
    action: str,
    target: str,
    *,
    service: str = "",
    request_id: str = "",
) -> Iterator[None]:
    """Record a refusal (a DomainError raised inside) in its own transaction, then let the
    error go on to the caller. The refused change's own transaction has rolled back by then."""
    try:
        yield
    except DomainError as exc:
        record_refusal(store, clock(), who, action, target, exc, service, request_id)
        raise


def record_refusal(
    store: Store,
    now: float,
    who: Principal,
    action: str,
    target: str,
    exc: DomainError,
    service: str = "",
    request_id: str = "",
) -> None:
    """The audit entry of a refused change, in a transaction of its own."""
    e = entry(
        who,
        action,
        target,
        now,
        outcome=exc.code,
        detail=exc.message,
        service=service,
        request_id=request_id,
    )
    try:
        with store.tx() as tx:
            tx.append_audit(e)
    except Exception:  # never hide the refusal behind a failure to record it
        log.exception("audit_write_failed", action=action, outcome=exc.code)

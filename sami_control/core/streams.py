"""Long-lived streams (watches, agent sessions) by the token that opened them.

Two things need them: a per-token limit on open streams (so one token cannot hold an
unbounded number of them), and ending a token's streams the moment it is revoked or
expires: a stream authenticated once must not outlive its token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sami_control.core.errors import ResourceExhausted
from sami_control.core.model import Principal


@dataclass(eq=False, slots=True)
class Stream:
    kind: str  # "watch" or "agent"
    who: Principal
    # Called once, with the reason, when the stream must end.
    on_end: Callable[[str], None] = field(repr=False)
    ended: str = ""

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = reason
            self.on_end(reason)


class Streams:
    def __init__(self, limit_per_token: Callable[[], int]) -> None:
        self._limit = limit_per_token
        self._by_token: dict[str, set[Stream]] = {}

    def open(self, kind: str, who: Principal, on_end: Callable[[str], None]) -> Stream:
        mine = self._by_token.setdefault(who.token_id, set())
        limit = self._limit()
        if limit > 0 and sum(1 for s in mine if s.kind == kind and not s.ended) >= limit:
            raise ResourceExhausted(
                f"token {who.name!r} already has {limit} {kind} streams open, the most one "
                "token may have: close some (or ask the operator to raise "
                "--max-streams-per-token)"
            )
        s = Stream(kind, who, on_end)
        mine.add(s)
        return s

    @contextlib.contextmanager
    def opened(self, kind: str, who: Principal, on_end: Callable[[str], None]) -> Iterator[Stream]:
        """open(), closed when the block ends."""
        s = self.open(kind, who, on_end)
        try:
            yield s
        finally:
            self.close(s)

    def close(self, s: Stream) -> None:
        mine = self._by_token.get(s.who.token_id)
        if mine is not None:
            mine.discard(s)
            if not mine:
                del self._by_token[s.who.token_id]

    def of_token(self, token_id: str) -> list[Stream]:
        return list(self._by_token.get(token_id, ()))

    def token_ids(self) -> list[str]:
        return list(self._by_token)

    def all(self) -> list[Stream]:
        return [s for mine in self._by_token.values() for s in mine]

    def end_token(self, token_id: str, reason: str) -> int:
        """End every open stream of a token; returns how many."""
        streams = self.of_token(token_id)
        for s in streams:
            s.end(reason)
        return len(streams)

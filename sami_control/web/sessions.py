"""Dashboard sessions, their CSRF tokens, and the brake on guessing tokens at sign-in.

A session lives in this process's memory only: the cookie holds a random id, never the
token; the token stays here so that every request is authenticated again through the core
(a revoked or expired token ends its sessions at their next request). A restart signs
everyone out, which is the safe side to err on."""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

# A session ends after this long without a request, and this long after sign-in at most.
IDLE_TIMEOUT = 30 * 60.0
ABSOLUTE_TIMEOUT = 12 * 3600.0
# Sessions kept at once; past it the least recently used ends (memory stays bounded).
MAX_SESSIONS = 10_000
# Failed sign-ins allowed in LOGIN_WINDOW seconds, from one client address and for one
# token id, before sign-in is refused there until the window has room again.
LOGIN_WINDOW = 300.0
FAILURES_PER_ADDRESS = 10
FAILURES_PER_TOKEN = 5
# Addresses and token prefixes remembered (the oldest are forgotten first).
MAX_TRACKED = 10_000

_TOKEN_ID = re.compile(r"sami_([0-9a-f]{12})_")


@dataclass
class Session:
    id: str
    token: str  # the Sami token: in memory only, never sent back to the browser
    csrf: str
    created: float
    last_seen: float
    # Set when the session ends: its live streams stop at their next event.
    ended: bool = False


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def start(self, token: str) -> Session:
        """A new session with a new id (never one the browser brought: no fixation)."""
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), now, now)
        self._by_id[s.id] = s
        while len(self._by_id) > MAX_SESSIONS:
            _, oldest = self._by_id.popitem(last=False)
            oldest.ended = True
        return s

    def get(self, session_id: str) -> Session | None:
        s = self._by_id.get(session_id)
        if s is None:
            return None
        now = self.clock()
        if now - s.last_seen > IDLE_TIMEOUT or now - s.created > ABSOLUTE_TIMEOUT:
            self.end(s.id)
            return None
        s.last_seen = now
        self._by_id.move_to_end(s.id)
        return s

    def end(self, session_id: str) -> None:
        s = self._by_id.pop(session_id, None)
        if s is not None:
            s.ended = True

    def __len__(self) -> int:
        return len(self._by_id)


def token_id_of(token: str) -> str:
    """The id of a Sami token ("" for anything else)."""
    m = _TOKEN_ID.match(token)
    return m.group(1) if m else ""


def token_prefix(token: str) -> str:
    """What identifies a token without its secret: its id, or for something that is not a
    Sami token, its first characters (guesses at one id are counted together)."""
    m = _TOKEN_ID.match(token)
    return m.group(1) if m else token[:17]


@dataclass
class _Window:
    times: deque[float] = field(default_factory=deque)


class LoginLimiter:
    """Counts failed sign-ins per client address and per token id in a sliding window. A
    guesser gets a few tries per window from one address; spreading them over addresses
    still hits the per-token limit."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: OrderedDict[str, _Window] = OrderedDict()

    def retry_after(self, address: str, token: str) -> float:
        """Seconds until sign-in may be tried again from `address` for `token` (0: now)."""
        now = self.clock()
        wait = 0.0
        for key, limit in self._keys(address, token):
            w = self._failures.get(key)
            if w is None:
                continue
            while w.times and now - w.times[0] >= LOGIN_WINDOW:
                w.times.popleft()
            if len(w.times) >= limit:
                wait = max(wait, LOGIN_WINDOW - (now - w.times[0]))
        return wait

    def failed(self, address: str, token: str) -> None:
        now = self.clock()
        for key, _ in self._keys(address, token):
            w = self._failures.pop(key, None) or _Window()
            w.times.append(now)
            self._failures[key] = w
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    @staticmethod
    def _keys(address: str, token: str) -> list[tuple[str, int]]:
        return [
            (f"addr:{address}", FAILURES_PER_ADDRESS),
            (f"token:{token_prefix(token)}", FAILURES_PER_TOKEN),
        ]

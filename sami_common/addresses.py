"""Control-plane address lists: `SAMI_ADDR`, the CLI's `--addr` and the agent's `--control`
take one `HOST:PORT` or several separated by commas, the replicas of one control plane
(`a.example:7443,b.example:7443`; IPv6 in brackets, `[::1]:7443`).

Plain Python, no grpc: parsing them strictly, and the order in which a client tries them
(`AddressRing`).
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence

EXAMPLE = "a.example:7443,b.example:7443"
# A DNS name or an IPv4 address: letters, digits, '-', '_' and dots.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


class AddressError(ValueError):
    """An unusable address list; the message names the bad entry and says how to fix it."""


def parse_addresses(text: str) -> tuple[str, ...]:
    """`HOST:PORT[,HOST:PORT...]` → the addresses, in the order given (spaces around an entry
    are dropped). Raises AddressError for an empty list or entry, a missing or bad port, an
    unbracketed IPv6 address, a scheme or path (`https://...`), or an address listed twice."""
    if not text.strip():
        raise AddressError(
            f"no control-plane address: give HOST:PORT, or several separated by commas "
            f"(e.g. {EXAMPLE})"
        )
    entries = [entry.strip() for entry in text.split(",")]
    addresses: list[str] = []
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise AddressError(
                f"{text!r}: entry {position} is empty; separate addresses with single commas "
                f"(e.g. {EXAMPLE})"
            )
        _check_address(entry)
        if entry in addresses:
            raise AddressError(f"{text!r}: {entry} is listed twice; list each replica once")
        addresses.append(entry)
    return tuple(addresses)


def _check_address(entry: str) -> None:
    if "/" in entry or "@" in entry:
        raise AddressError(
            f"{entry!r} is not HOST:PORT: write the host and port only, no scheme, user or "
            "path (e.g. sami.example:7443)"
        )
    host, sep, port = entry.rpartition(":")
    if entry.startswith("[") and not host.endswith("]"):
        # `[::1]` alone: the last colon is inside the brackets.
        host, sep, port = entry, "", ""
    if not sep or not port:
        host = host if sep else entry
        raise AddressError(
            f"{entry!r} has no port: write it as HOST:PORT (sami-control listens on 7443 by "
            f"default: {host}:7443)"
        )
    if not host:
        raise AddressError(f"{entry!r} has no host: write it as HOST:PORT (e.g. 127.0.0.1{entry})")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise AddressError(f"{entry!r}: the port {port!r} is not a number from 1 to 65535")
    _check_host(entry, host)


def _check_host(entry: str, host: str) -> None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise AddressError(
                f"{entry!r}: {host[1:-1]!r} in brackets is not an IPv6 address"
            ) from None
        return
    if ":" in host:
        raise AddressError(
            f"{entry!r}: write an IPv6 address in brackets, e.g. [::1]:7443 (a bare colon "
            "separates the port)"
        )
    if not _HOST_NAME.fullmatch(host):
        raise AddressError(
            f"{entry!r}: {host!r} is not a host name or IP address (letters, digits, '-', '.', '_')"
        )


class AddressRing:
    """The order in which a client tries the replicas: it stays on one address while that one
    works and moves to the next one when it fails, wrapping around at the end."""

    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ValueError("an AddressRing needs at least one address")
        self.addresses = tuple(addresses)
        self._index = 0

    @classmethod
    def shuffled(cls, addresses: Sequence[str], rng: random.Random | None = None) -> AddressRing:
        """The addresses in a random order of this ring's own: N agents given the same list
        spread over the replicas instead of all starting on the first, and the agents of a
        replica that dies spread over the others instead of all moving to the next one."""
        order = list(addresses)
        (rng or random.Random()).shuffle(order)
        return cls(order)

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    @property
    def next(self) -> str:
        """The address `advance()` moves to (the current one when there is only one)."""
        return self.addresses[(self._index + 1) % len(self.addresses)]

    def advance(self) -> str:
        """Move to the next address and return it."""
        self._index = (self._index + 1) % len(self.addresses)
        return self.current

    def __len__(self) -> int:
        return len(self.addresses)


def describe(addresses: Sequence[str]) -> str:
    """`a:7443`, `a:7443 or b:7443`, `a:7443, b:7443 or c:7443`: for messages that ask
    whether sami-control runs there."""
    if len(addresses) <= 1:
        return "".join(addresses)
    return f"{', '.join(addresses[:-1])} or {addresses[-1]}"

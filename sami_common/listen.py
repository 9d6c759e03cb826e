"""`HOST:PORT` listen addresses, as every Sami server takes them (the control plane's gRPC
port, its metrics and webhook ports, the agent's metrics port): parsing them, and whether
only this machine can reach one, which decides whether a port may do without TLS."""

from __future__ import annotations

import ipaddress


class ListenError(ValueError):
    """An unusable HOST:PORT."""


def split_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) → (host, port). Port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ListenError(f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ListenError(f"{listen!r}: the port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ListenError(f"{listen!r}: the port must be 0-65535")
    return host, number


def is_loopback(listen: str) -> bool:
    """True when `listen` is on a loopback address (127.0.0.0/8, ::1, localhost).
    Raises ListenError when it is no HOST:PORT."""
    host, _ = split_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_tls_off_loopback(
    listen: str, *, tls: bool, insecure: bool, serving: str = "listen", secrets: str = "tokens"
) -> None:
    """The rule of every port that carries credentials: off loopback, TLS or an explicit
    --insecure (a trusted proxy terminates TLS in front of Sami). Raises ListenError naming
    the way out; `serving` says what is refused ("listen", "serve the dashboard"), `secrets`
    what would cross the network in clear."""
    if tls or insecure or is_loopback(listen):
        return
    raise ListenError(
        f"refusing to {serving} on {listen} without TLS: {secrets} would cross the "
        "network in clear. Listen on 127.0.0.1, pass --tls-cert and --tls-key "
        "(`sami-control tls init` makes them), or pass --insecure if a trusted "
        "proxy terminates TLS in front of Sami"
    )

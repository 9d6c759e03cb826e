"""How the client and the agent reach the control plane.

SAMI_ADDR (host:port, or several separated by commas: the replicas of one control plane,
sami_common/addresses.py), SAMI_TOKEN (bearer token) and SAMI_CA (PEM file of the CA that signed
the server certificate; without it the connection is plaintext, which the server accepts only
on loopback or when told explicitly). SAMI_CLIENT_CERT and SAMI_CLIENT_KEY (PEM files) are the
client certificate and its key, for a server that requires them (mTLS); with them and no
SAMI_CA the server's certificate is checked against the system's CAs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio

from sami_common.addresses import parse_addresses

DEFAULT_ADDR = "127.0.0.1:7443"


def _keepalive_ms() -> int:
    """SAMI_KEEPALIVE_SECONDS (default 20): how often an idle connection is pinged; a ping
    unanswered for half as long closes it. The control plane accepts pings every second."""
    try:
        seconds = float(os.environ.get("SAMI_KEEPALIVE_SECONDS", "20"))
    except ValueError:
        seconds = 20.0
    return int(max(1.0, seconds) * 1000)


# Keepalives let both ends notice a dead peer behind NAT (or a link that silently drops
# everything) within 1.5 keepalive periods, instead of the kernel's two hours. An idle agent
# relies on them (it heartbeats only every 2 minutes, docs/agent-protocol.md). grpcio (1.85)
# times a keepalive ping out after `grpc.http2.ping_timeout_ms` (default 60 s), whatever
# keepalive_timeout_ms says: both are set, or a blackholed link takes 80 s to notice.
CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.keepalive_time_ms", _keepalive_ms()),
    ("grpc.keepalive_timeout_ms", _keepalive_ms() // 2),
    ("grpc.http2.ping_timeout_ms", _keepalive_ms() // 2),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
)

# How long one connection attempt to one of several replicas may take (TCP and TLS handshake)
# before the client gives up on it and moves to the next: a replica whose host is down drops
# the connection attempt silently, and grpc's own limit (20 s) would keep CI jobs and agents
# waiting that long. A single address keeps grpc's limit: there is nowhere else to go.
REPLICA_CONNECT_TIMEOUT = 5.0

# An agent holding no lease heartbeats this many times less often than the Welcome says
# (every 120 s by default): there is nothing to renew, and on a control plane serving
# thousands of idle agents their heartbeats are most of its idle work. The keepalives above
# notice a dead link meanwhile. Here, not in sami_agent, so the benchmark's simulated agents
# follow the same policy without importing the agent.
IDLE_HEARTBEAT_FACTOR = 12


class TLSFileError(OSError):
    """A certificate or key file named by SAMI_CA/SAMI_CLIENT_CERT/SAMI_CLIENT_KEY (or the
    matching options) cannot be used; the message says which and why."""


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TLSFileError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise TLSFileError(f"the {what} {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the control plane. `addr` is one HOST:PORT or several separated
    by commas; a channel is made to one of them at a time (`at(address).channel()`), so
    that TLS checks each replica's certificate against that replica's own host name."""

    addr: str
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    # Seconds one connection attempt may take; None: grpc's own limit. Set by `at`.
    connect_timeout: float | None = None

    @classmethod
    def from_env(
        cls,
        addr: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        client_cert_file: str | None = None,
        client_key_file: str | None = None,
    ) -> Endpoint:
        return cls(
            addr=addr or os.environ.get("SAMI_ADDR") or DEFAULT_ADDR,
            token=token if token is not None else os.environ.get("SAMI_TOKEN") or None,
            ca_file=ca_file or os.environ.get("SAMI_CA") or None,
            client_cert_file=client_cert_file or os.environ.get("SAMI_CLIENT_CERT") or None,
            client_key_file=client_key_file or os.environ.get("SAMI_CLIENT_KEY") or None,
        )

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address in `addr`, in the order given; AddressError for a bad list."""
        return parse_addresses(self.addr)

    def at(self, address: str) -> Endpoint:
        """This endpoint at one of its addresses (with a short connect timeout when it has
        several, REPLICA_CONNECT_TIMEOUT)."""
        several = len(self.addresses) > 1
        timeout = REPLICA_CONNECT_TIMEOUT if several else self.connect_timeout
        return dataclasses.replace(self, addr=address, connect_timeout=timeout)

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.client_cert_file)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise TLSFileError(
                "a client certificate needs its key and the other way round: set both "
                "SAMI_CLIENT_CERT and SAMI_CLIENT_KEY"
            )
        root = _read_pem(self.ca_file, "CA file (SAMI_CA)") if self.ca_file else None
        cert = key = None
        if self.client_cert_file and self.client_key_file:
            cert = _read_pem(self.client_cert_file, "client certificate (SAMI_CLIENT_CERT)")
            key = _read_pem(self.client_key_file, "client key (SAMI_CLIENT_KEY)")
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=cert
        )

    def channel(self) -> grpc.Channel:
        """A channel to `addr`, which must be a single address (see `at`)."""
        addr = self._one_address()
        creds = self._credentials()
        if creds is None:
            return grpc.insecure_channel(addr, options=self._options())
        return grpc.secure_channel(addr, creds, options=self._options())

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel to `addr`, which must be a single address (see `at`)."""
        addr = self._one_address()
        creds = self._credentials()
        if creds is None:
            return grpc.aio.insecure_channel(addr, options=self._options())
        return grpc.aio.secure_channel(addr, creds, options=self._options())

    def _options(self) -> Sequence[tuple[str, int]]:
        if self.connect_timeout is None:
            return CHANNEL_OPTIONS
        # grpc names its minimum connect timeout after the reconnect backoff; it is the time
        # one attempt may take (its backoff between attempts has options of its own).
        ms = int(self.connect_timeout * 1000)
        return (*CHANNEL_OPTIONS, ("grpc.min_reconnect_backoff_ms", ms))

    def _one_address(self) -> str:
        addresses = self.addresses
        if len(addresses) != 1:
            # grpc would take "a:7443,b:7443" as one host name and fail confusingly later.
            raise ValueError(
                f"a channel goes to one address, not {self.addr!r}: use Endpoint.at(address)"
            )
        return addresses[0]

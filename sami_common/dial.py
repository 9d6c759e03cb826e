"""How the client and the agent reach the control plane.

SAMI_ADDR (host:port), SAMI_TOKEN (bearer token) and SAMI_CA (PEM file of the CA that signed
the server certificate; without it the connection is plaintext, which the server accepts only
on loopback or when told explicitly).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

DEFAULT_ADDR = "127.0.0.1:7443"

# Keepalives let both ends notice a dead peer behind NAT within ~30 s, instead of the
# kernel's two hours.
CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
)


@dataclass(frozen=True)
class Endpoint:
    addr: str
    token: str | None
    ca_file: str | None = None

    @classmethod
    def from_env(
        cls, addr: str | None = None, token: str | None = None, ca_file: str | None = None
    ) -> Endpoint:
        return cls(
            addr=addr or os.environ.get("SAMI_ADDR") or DEFAULT_ADDR,
            token=token if token is not None else os.environ.get("SAMI_TOKEN") or None,
            ca_file=ca_file or os.environ.get("SAMI_CA") or None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if not self.ca_file:
            return None
        with open(self.ca_file, "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())

    def channel(self) -> grpc.Channel:
        creds = self._credentials()
        if creds is None:
            return grpc.insecure_channel(self.addr, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(self.addr, creds, options=CHANNEL_OPTIONS)

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self._credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.addr, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(self.addr, creds, options=CHANNEL_OPTIONS)

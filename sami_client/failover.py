"""Several control-plane replicas behind the client's one channel.

`FailoverChannel` looks like a `grpc.Channel` to the generated stubs, but holds a real
channel to one address at a time (made when first needed, closed when the client moves on),
so that TLS checks each replica's certificate against its own host name. grpc's own
multi-address targets would check every replica against one name.

A unary call that fails with UNAVAILABLE moves to the next address and is sent again there,
once per address, when that is safe:

- reads (Get*, List*, Watch*: every read in proto/sami/v1 is named so, plus the agent
  queries PlanDeployment and ServiceLogs, which change nothing) and changes that carry a
  `request_id` (CreateDeployment, TeardownPreview: the server answers a repeated key with
  the deployment it already made) are sent again after any UNAVAILABLE. An agent query
  needs the replica the agent's stream is on: another answers UNAVAILABLE, and the call
  moves on until it reaches it;
- any other change (CancelDeployment, CreateCluster, CreateToken...) may have reached the
  server before the connection broke, and grpc does not tell whether it did. Such a call
  is sent only on a channel that grpc reported READY (connected, TLS handshake done); if
  the address never gets there, nothing was written to it, and the call moves on. Once
  sent, its failure is final, whatever the code. (At the last address left it is sent
  without waiting, as with a single address, so that the error is grpc's own.)

Other codes (NOT_FOUND, UNAUTHENTICATED, DEADLINE_EXCEEDED...) are the answer, not a replica
being down: they are raised at once. Streams (`WatchDeployment`) are not re-sent here: the
watch resumes itself after the last event it saw (`SamiClient.watch`, `fail_over`), and
`SamiClient.service_logs` moves on while no line has arrived yet.

With a single address nothing changes: every call goes to it and its error is raised as
grpc reported it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from sami_client.errors import SamiError
from sami_common.addresses import AddressRing, describe
from sami_common.dial import Endpoint

# The longest a change without a request_id waits for a replica to get READY before moving
# to the next one. grpc itself reports a failed attempt sooner: a replica among several gets
# dial.REPLICA_CONNECT_TIMEOUT per connection attempt.
CONNECT_TIMEOUT = 10.0

_READ_PREFIXES = ("Get", "List", "Watch")
# Questions for an agent: they read the swarm and change nothing.
_AGENT_QUERIES = frozenset({"PlanDeployment", "ServiceLogs"})


def retry_safe(method: str, request: Any) -> bool:
    """Whether sending `request` to `method` (`/sami.v1.Service/Method`) again, possibly to
    another replica, cannot do a change twice."""
    name = method.rsplit("/", 1)[-1]
    return (
        name.startswith(_READ_PREFIXES)
        or name in _AGENT_QUERIES
        or bool(getattr(request, "request_id", ""))
    )


class FailoverChannel(grpc.Channel):
    """One channel at a time to one of `endpoint`'s addresses; see the module docstring."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._endpoint = endpoint
        self._ring = AddressRing(endpoint.addresses)
        self._connect_timeout = connect_timeout
        self._channel: grpc.Channel | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        return self._ring.addresses

    @property
    def address(self) -> str:
        """The address calls go to now."""
        return self._ring.current

    @property
    def next_address(self) -> str:
        """Where `fail_over` moves to (the same address when there is only one)."""
        return self._ring.next

    def current(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = self._endpoint.at(self._ring.current).channel()
        return self._channel

    def fail_over(self) -> None:
        """Close the channel; the next call dials the next address. With one address it dials
        that one again on a fresh channel: a channel whose connection failed waits out grpc's
        own reconnect backoff (growing to two minutes) before trying again, a new one dials at
        once, so the caller's backoff alone decides when to retry."""
        self._close_channel()
        self._ring.advance()

    def close(self) -> None:
        self._close_channel()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def connected(self) -> bool:
        """Whether the current address's channel is (or gets within the connect timeout)
        READY; False as soon as grpc reports that connecting failed."""
        return _wait_ready(self.current(), self._connect_timeout)

    # What the generated stubs call: a multicallable per method, bound to this object
    # rather than to one channel.

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _UnaryUnary:
        return _UnaryUnary(self, method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Direct:
        return _Direct(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Direct:
        return _Direct(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Direct:
        return _Direct(self, "stream_stream", method, args, kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        raise NotImplementedError("subscribe to FailoverChannel.current() instead")

    def unsubscribe(self, callback: Any) -> None:
        raise NotImplementedError("subscribe to FailoverChannel.current() instead")

    def __enter__(self) -> FailoverChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Direct:
    """A stream call, made on the current channel as it is when called."""

    def __init__(
        self, owner: FailoverChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: Any
    ) -> None:
        self._make: Callable[[], Any] = lambda: getattr(owner.current(), kind)(
            method, *args, **kwargs
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._make()(*args, **kwargs)


class _UnaryUnary:
    """A unary call with failover. Only the plain call is offered (no `with_call`, no
    `future`): the client uses nothing else."""

    def __init__(
        self, owner: FailoverChannel, method: str, args: tuple[Any, ...], kwargs: Any
    ) -> None:
        self._owner = owner
        self._method = method
        self._args = args
        self._kwargs = kwargs

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        owner = self._owner
        safe = retry_safe(self._method, request)
        failures: list[tuple[str, str]] = []
        while True:
            last_chance = len(failures) == len(owner.addresses) - 1
            address = owner.address
            if not (safe or last_chance or owner.connected()):
                # Never connected, so the request was never written: another replica may
                # have it. (At the last address it is sent anyway, as with a single one, so
                # the error says what grpc saw.)
                failures.append((address, "could not connect"))
                owner.fail_over()
                continue
            call = owner.current().unary_unary(self._method, *self._args, **self._kwargs)
            try:
                return call(request, **kwargs)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or not safe or last_chance:
                    if failures and err.code() == grpc.StatusCode.UNAVAILABLE:
                        raise _unreachable([*failures, (address, err.details())]) from err
                    raise
                failures.append((address, err.details() or "unavailable"))
                owner.fail_over()


def _unreachable(failures: list[tuple[str, str]]) -> SamiError:
    addresses = [address for address, _ in failures]
    return SamiError(
        grpc.StatusCode.UNAVAILABLE,
        f"no replica of sami-control answered (tried {describe(addresses)})",
        details=[f"{address}: {why}" for address, why in failures],
    )


def _wait_ready(channel: grpc.Channel, timeout: float) -> bool:
    """READY within `timeout`; False at TRANSIENT_FAILURE (connecting failed) or SHUTDOWN."""
    settled = threading.Event()
    outcome: list[grpc.ChannelConnectivity] = []
    final = (
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    )

    def seen(state: grpc.ChannelConnectivity) -> None:
        if state in final and not settled.is_set():
            outcome.append(state)
            settled.set()

    channel.subscribe(seen, try_to_connect=True)
    try:
        settled.wait(timeout)
    finally:
        channel.unsubscribe(seen)
    return outcome == [grpc.ChannelConnectivity.READY]

"""`SAMI_ADDR=a:7443,b:7443`: the CLI moves to another replica when one is down, sends a
change again only when that cannot do it twice, and follows a deployment across replicas
without showing an event twice or missing one.

The replicas are fake control planes (tests/client/fake_control.py) on real sockets; two
that share one FakeControl share their state, as replicas on one database do.
tests/e2e/test_failover_processes.py does the same with real sami-control processes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from sami.v1 import deployment_pb2

from .cli_result import Result
from .fake_control import ADMIN_TOKEN, REF, FakeControl, FakeServer

DEPLOY = ("deploy", "web", "--env", "stage", "--artifact", REF)


def _dead_addr(ipv6: bool = False) -> str:
    """An address where nothing listens: connections are refused."""
    family, host = (socket.AF_INET6, "::1") if ipv6 else (socket.AF_INET, "127.0.0.1")
    with socket.socket(family) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return f"[{host}]:{port}" if ipv6 else f"{host}:{port}"


@pytest.fixture
def start() -> Iterator[Callable[[FakeControl], FakeServer]]:
    servers: list[FakeServer] = []

    def start_one(control: FakeControl) -> FakeServer:
        server = FakeServer(control)
        server.start()
        servers.append(server)
        return server

    yield start_one
    for server in servers:
        server.stop()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An address whose connection attempts hang, as a replica whose host is down: a
    listening socket that never accepts, its one-place queue already taken."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        with socket.create_connection(listener.getsockname()):
            yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMI_TOKEN", ADMIN_TOKEN)


def _addrs(monkeypatch: pytest.MonkeyPatch, *addrs: str) -> None:
    monkeypatch.setenv("SAMI_ADDR", ",".join(addrs))


def test_a_read_goes_to_the_replica_that_is_up(sami, start, token, monkeypatch) -> None:
    control = FakeControl()
    deployment_id = control.add_deployment()
    up = start(control)
    _addrs(monkeypatch, _dead_addr(), up.addr)
    result: Result = sami("get", deployment_id)
    assert result.code == 0, result.err
    assert "SUCCEEDED" in result.out


def test_the_client_stays_on_the_replica_that_answered(sami, start, token, monkeypatch) -> None:
    first, second = FakeControl(), FakeControl()
    for _ in range(5):  # Three pages of two: each page after the first is a new call.
        second.add_deployment()
    servers = start(first), start(second)
    servers[0].stop()
    _addrs(monkeypatch, servers[0].addr, servers[1].addr)
    result = sami("list")
    assert result.code == 0, result.err
    assert all(f"d{i}" in result.out for i in range(1, 6))


def test_ipv6_addresses_work_alone_and_in_a_list(sami, token, monkeypatch) -> None:
    control = FakeControl()
    deployment_id = control.add_deployment()
    server = FakeServer(control, host="[::1]")
    server.start()
    try:
        for addrs in ((server.addr,), (_dead_addr(ipv6=True), server.addr)):
            _addrs(monkeypatch, *addrs)
            result = sami("get", deployment_id)
            assert result.code == 0, (addrs, result.err)
    finally:
        server.stop()


def test_every_replica_down_names_them_all_and_exits_3(sami, token, monkeypatch) -> None:
    a, b = _dead_addr(), _dead_addr()
    _addrs(monkeypatch, a, b)
    result = sami("get", "d1")
    assert result.code == 3
    assert f"UNAVAILABLE: no replica of sami-control answered (tried {a} or {b})" in result.err
    assert f"  {a}: " in result.err and f"  {b}: " in result.err
    assert f"is sami-control running at {a} or {b}? set SAMI_ADDR" in result.err


def test_a_deploy_with_a_request_id_is_sent_again_to_the_next_replica(
    sami, start, token, monkeypatch
) -> None:
    # The first replica reads the request and goes away before answering: it may have
    # stored the deployment. The request id makes sending it again safe.
    first, second = FakeControl(drop_after_receipt={"CreateDeployment"}), FakeControl()
    _addrs(monkeypatch, start(first).addr, start(second).addr)
    result = sami(*DEPLOY, "--request-id", "ci-run-7")
    assert result.code == 0, result.err
    assert result.lines[-1] == "d1"
    sent = [(m, r.request_id) for m, r in first.received + second.received]
    assert sent == [("CreateDeployment", "ci-run-7"), ("CreateDeployment", "ci-run-7")]


def test_a_change_without_request_id_is_not_sent_twice(sami, start, token, monkeypatch) -> None:
    first, second = FakeControl(drop_after_receipt={"CreateDeployment"}), FakeControl()
    _addrs(monkeypatch, start(first).addr, start(second).addr)
    result = sami(*DEPLOY)
    assert result.code == 3  # The outcome is unknown: the first replica may have done it.
    assert "UNAVAILABLE: fake: replica went away after reading it" in result.err
    assert [m for m, _ in first.received] == ["CreateDeployment"]
    assert second.received == []


def test_a_change_without_request_id_moves_on_when_it_was_never_sent(
    sami, start, token, monkeypatch
) -> None:
    control = FakeControl()
    running = control.add_deployment(release=3)
    _addrs(monkeypatch, _dead_addr(), start(control).addr)
    assert sami(*DEPLOY).code == 0
    cancelled = sami("cancel", running)
    assert cancelled.code == 0, cancelled.err
    assert control.deployments[running].cancel_requested
    assert [m for m, _ in control.received] == ["CreateDeployment", "CancelDeployment"]


def test_an_answer_is_final_even_when_another_replica_might_say_otherwise(
    sami, start, token, monkeypatch
) -> None:
    first, second = FakeControl(), FakeControl()
    second.add_deployment()
    _addrs(monkeypatch, start(first).addr, start(second).addr)
    result = sami("get", "d1")
    assert result.code == 2
    assert "NOT_FOUND" in result.err
    assert second.received == []


def test_a_wait_moves_to_another_replica_without_gaps_or_repeats(
    sami, start, token, monkeypatch, background
) -> None:
    shared = FakeControl(release_on_create=3)
    first, second = start(shared), start(shared)
    _addrs(monkeypatch, first.addr, second.addr)

    def first_replica_dies() -> None:
        shared.wait_sent("d1", 3)
        first.stop()  # Cuts the open watch.
        shared.release("d1")  # The other replica sees what happened meanwhile.

    background(first_replica_dies)
    result = sami(*DEPLOY, "--wait", "--timeout", "20")
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert result.lines[-1].startswith("SUCCEEDED: deployment d1")
    assert shared.watch_calls == [("d1", 0), ("d1", 3)]
    assert f"no connection to sami-control at {first.addr}" in result.err
    assert f"resuming the watch of deployment d1 at {second.addr} in" in result.err


def test_a_watch_comes_back_to_the_first_replica_when_the_second_is_down(
    sami, start, token, monkeypatch, background
) -> None:
    shared = FakeControl()
    deployment_id = shared.add_deployment(release=2)
    first = start(shared)
    _addrs(monkeypatch, first.addr, _dead_addr())

    def blip() -> None:
        shared.wait_sent(deployment_id, 2)
        first.restart()  # Down for a moment; the second address is refused meanwhile.
        shared.release(deployment_id)

    background(blip)
    result = sami("watch", deployment_id, "--timeout", "20")
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert shared.watch_calls[0] == ("d1", 0)
    assert set(shared.watch_calls[1:]) == {("d1", 2)}


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (("--addr", "a:7443,,b:7443", "list"), "", "--addr: 'a:7443,,b:7443': entry 2 is empty"),
        (("--addr", "a:7443,b", "list"), "", "--addr: 'b' has no port"),
        (("list",), "a:7443,b:74x3", "SAMI_ADDR: 'b:74x3': the port '74x3' is not a number"),
        (("deploy", "web", "--env", "stage", "--artifact", REF), "::1:7443", "in brackets"),
    ],
)
def test_a_bad_address_list_is_a_usage_error(
    sami, token, monkeypatch, argv: tuple[str, ...], env: str, says: str
) -> None:
    if env:
        monkeypatch.setenv("SAMI_ADDR", env)
    result = sami(*argv)
    assert result.code == 2
    assert says in result.err
    assert "Traceback" not in result.err


def test_a_bad_address_list_does_not_stop_commands_that_reach_no_server(
    sami, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("SAMI_ADDR", "a:7443,,b")
    result = sami("completion", "bash")
    assert result.code == 0, result.err


def test_the_library_follows_a_deployment_on_the_replica_that_is_up(start, token) -> None:
    """SamiClient.watch, as scripts use it: one snapshot, then each event once."""
    from sami_client.client import SamiClient
    from sami_common.dial import Endpoint

    shared = FakeControl()
    deployment_id = shared.add_deployment()
    up = start(shared)
    with SamiClient(Endpoint(addr=f"{_dead_addr()},{up.addr}", token=ADMIN_TOKEN)) as client:
        items = list(client.watch(deployment_id, timeout=20))
        assert client.address == up.addr
    assert isinstance(items[0], deployment_pb2.Deployment)
    assert [i.sequence for i in items[1:]] == [1, 2, 3, 4, 5, 6]


def test_a_replica_whose_host_is_down_is_given_up_after_the_connect_timeout(
    start, blackhole: str, monkeypatch
) -> None:
    from sami_client.client import SamiClient
    from sami_common import dial

    # 1 s instead of 5, to keep the test short; grpc's own limit is longer than 4 s.
    monkeypatch.setattr(dial, "REPLICA_CONNECT_TIMEOUT", 1.0)
    control = FakeControl()
    deployment_id = control.add_deployment()
    up = start(control)
    endpoint = dial.Endpoint(addr=f"{blackhole},{up.addr}", token=ADMIN_TOKEN)
    for call in ("get_deployment", "cancel_deployment"):  # A read, and a change without id.
        with SamiClient(endpoint) as client:
            began = time.monotonic()
            assert getattr(client, call)(deployment_id).id == deployment_id
            took = time.monotonic() - began
        assert took < 4, f"{call} took {took:.1f}s"


def test_a_single_address_keeps_grpcs_own_connect_timeout() -> None:
    from sami_common.dial import REPLICA_CONNECT_TIMEOUT, Endpoint

    one = Endpoint(addr="127.0.0.1:7443")
    assert one.at("127.0.0.1:7443").connect_timeout is None
    several = Endpoint(addr="127.0.0.1:7443,127.0.0.2:7443")
    assert several.at("127.0.0.2:7443").connect_timeout == REPLICA_CONNECT_TIMEOUT

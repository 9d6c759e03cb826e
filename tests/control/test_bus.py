"""The replicas' notices (core/bus.py) and what a replica does with those of the others
(core/peers.py), without a database: a bus that records what is sent."""

from __future__ import annotations

import json

import pytest

from sami_control.core.bus import MAX_PAYLOAD, Bus, Notice, Receiver
from sami_control.core.commands import CancelCommand, CloseCommand, RevokeCommand
from sami_control.core.hub import Hub
from sami_control.core.model import Principal, Role
from sami_control.core.peers import Peers
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.streams import Streams


class RecordingBus(Bus):
    replica_id = "r-me"

    def __init__(self) -> None:
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.sent.append(notice)

    async def start(self, receive: Receiver, resync: object) -> None:
        return None

    async def stop(self) -> None:
        return None


def test_a_notice_survives_encoding_and_decoding() -> None:
    n = Notice(
        sender="r-a",
        events={"dep-1": (3, 7)},
        work={"c1"},
        commands=[("c1", "agent-1", "cancel", "dep-1", "lease-1", "asked by ci")],
        revoked_tokens={"tok-1"},
        connected={("c1", "agent-2")},
    )
    (payload,) = n.encode()
    assert Notice.decode(payload) == n


def test_a_large_notice_is_split_into_payloads_postgres_accepts() -> None:
    n = Notice(sender="r-a", events={f"dep-{i:05d}": (i, i + 1) for i in range(2000)})
    payloads = n.encode()
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    back = Notice()
    for p in payloads:
        back.merge(Notice.decode(p))
    assert back.events == n.events
    assert {Notice.decode(p).sender for p in payloads} == {"r-a"}


def test_merging_keeps_the_widest_span_of_events() -> None:
    a = Notice(events={"d": (5, 6)}, work={"c1"})
    a.merge(Notice(events={"d": (2, 9), "e": (1, 1)}, work={"c2"}))
    assert a.events == {"d": (2, 9), "e": (1, 1)}
    assert a.work == {"c1", "c2"}


def test_a_malformed_payload_is_refused() -> None:
    with pytest.raises((ValueError, TypeError)):
        Notice.decode(json.dumps({"s": "x", "e": [["only-two", 1]]}))


def _peers(clock: float = 100.0) -> tuple[Peers, Sessions, Streams, list[str], list[int]]:
    sessions = Sessions()
    streams = Streams(lambda: 100)
    forgotten: list[str] = []
    woken: list[int] = []
    peers = Peers(
        RecordingBus(),
        store=None,  # type: ignore[arg-type]  # these tests read nothing
        hub=Hub(),
        sessions=sessions,
        streams=streams,
        forget_token=forgotten.append,
        wake=lambda: woken.append(1),
        clock=lambda: clock,
    )
    return peers, sessions, streams, forgotten, woken


def _session(
    sessions: Sessions, streams: Streams, agent: str, connected_at: float = 0.0
) -> AgentSession:
    s = AgentSession(agent, "c1", "1", frozenset({"swarm"}), "tok-a", connected_at, connected_at)
    s.stream = streams.open(
        "agent", Principal("tok-a", "a", Role.AGENT, cluster="c1"), lambda _: None
    )
    sessions.put(s)
    return s


def _drain(s: AgentSession) -> list[object]:
    out = []
    while not s.outbox.empty():
        out.append(s.outbox.get_nowait())
    return out


def test_commands_reach_the_agent_connected_here_and_nobody_else() -> None:
    peers, sessions, streams, _, _ = _peers()
    here = _session(sessions, streams, "agent-1")
    here.leases.add("dep-1")
    peers.receive(
        Notice(
            sender="r-other",
            commands=[
                ("c1", "agent-1", "revoke", "dep-1", "lease-1", "lease expired"),
                ("c1", "agent-1", "cancel", "dep-2", "lease-2", "asked"),
                ("c1", "agent-elsewhere", "cancel", "dep-3", "lease-3", "asked"),
            ],
        )
    )
    assert _drain(here) == [
        RevokeCommand("dep-1", "lease-1", "lease expired"),
        CancelCommand("dep-2", "lease-2", "asked"),
    ]
    assert "dep-1" not in here.leases


def test_own_notices_echoed_back_are_ignored() -> None:
    peers, sessions, streams, forgotten, woken = _peers()
    here = _session(sessions, streams, "agent-1")
    peers.receive(
        Notice(
            sender="r-me",
            work={"c1"},
            revoked_tokens={"tok-a"},
            commands=[("c1", "agent-1", "cancel", "d", "l", "x")],
        )
    )
    assert (_drain(here), forgotten, woken) == ([], [], [])


def test_work_wakes_dispatch_only_for_clusters_with_agents_here() -> None:
    peers, sessions, streams, _, woken = _peers()
    peers.receive(Notice(sender="r-other", work={"c1"}))
    assert woken == []
    _session(sessions, streams, "agent-1")
    peers.receive(Notice(sender="r-other", work={"c2"}))
    assert woken == []
    peers.receive(Notice(sender="r-other", work={"c1", "c2"}))
    assert woken == [1]


def test_a_token_revoked_elsewhere_ends_its_streams_here() -> None:
    peers, sessions, streams, forgotten, _ = _peers()
    s = _session(sessions, streams, "agent-1")
    assert s.stream is not None
    peers.receive(Notice(sender="r-other", revoked_tokens={"tok-a"}))
    assert forgotten == ["tok-a"]
    assert s.stream.ended == "token tok-a was revoked"


def test_an_agent_that_connected_elsewhere_loses_its_old_stream_here() -> None:
    peers, sessions, streams, _, _ = _peers(clock=100.0)
    old = _session(sessions, streams, "agent-1", connected_at=10.0)
    peers.receive(Notice(sender="r-other", connected={("c1", "agent-1")}))
    (close,) = _drain(old)
    assert isinstance(close, CloseCommand)
    assert old.closed
    assert sessions.open_by_cluster() == {}


def test_a_stream_opened_here_a_moment_ago_is_kept() -> None:
    # Two notices cross: the agent's newest stream is this one, the other replica's is old.
    peers, sessions, streams, _, _ = _peers(clock=100.0)
    fresh = _session(sessions, streams, "agent-1", connected_at=99.9)
    peers.receive(Notice(sender="r-other", connected={("c1", "agent-1")}))
    assert not fresh.closed

"""`sami artifact ...`, `sami cluster ...` and `sami agents` in text mode."""

from __future__ import annotations

from sami.v1 import cluster_pb2

from .fake_control import DIGEST, REF, FakeControl


def test_register_prints_the_id_and_is_idempotent(sami, server, control: FakeControl) -> None:
    first = sami(
        "artifact",
        "register",
        "web",
        "--ref",
        REF,
        "--tag",
        "v1",
        "--tag",
        "latest",
        "--label",
        "team=web",
        "--git-commit",
        "d" * 40,
    )
    assert first.code == 0, first.err
    assert first.out == "a1\n"
    assert "registered artifact web@" in first.err
    stored = control.artifacts[0]
    assert stored.digest == DIGEST  # Taken from the ref.
    assert list(stored.tags) == ["v1", "latest"] and dict(stored.labels) == {"team": "web"}
    assert stored.provenance.git_commit == "d" * 40
    again = sami("artifact", "register", "web", "--ref", REF)
    assert again.out == "a1\n" and "already registered" in again.err


def test_register_needs_a_digest(sami, server) -> None:
    result = sami("artifact", "register", "web", "--ref", "127.0.0.1:5000/web:latest")
    assert result.code == 2
    assert "not pinned by digest" in result.err and "--digest" in result.err
    bad = sami("artifact", "register", "web", "--ref", "x/web:1", "--digest", "sha256:XYZ")
    assert bad.code == 2 and "artifact.digest: must be sha256:" in bad.err
    assert sami("artifact", "register", "web", "--ref", REF, "--label", "novalue").code == 2


def test_get_and_list_artifacts(sami, server) -> None:
    for i in range(3):
        digest = "sha256:" + f"{i:x}" * 64
        assert sami("artifact", "register", "web", "--ref", f"r/web@{digest}").code == 0
    assert DIGEST not in sami("artifact", "get", "a2").out
    assert "sha256:" + "1" * 64 in sami("artifact", "get", "a2").out
    listed = sami("artifact", "list", "--name", "web")
    assert [line.split()[0] for line in listed.lines[1:]] == ["a3", "a2", "a1"]
    missing = sami("artifact", "get", "a9")
    assert missing.code == 2 and "artifact a9 not found" in missing.err


def test_clusters_and_agents(sami, server) -> None:
    created = sami("cluster", "create", "vps2", "--env", "stage", "--env", "production")
    assert created.code == 0
    assert created.out == "cluster vps2 serves stage, production\n"
    assert sami("cluster", "create", "vps2", "--env", "stage").code == 2
    listed = sami("cluster", "list")
    assert "vps1" in listed.out and "vps2" in listed.out
    agents = sami("agents")
    assert agents.lines[0].split()[:3] == ["AGENT", "CLUSTER", "CONNECTED"]
    assert agents.lines[1].split()[:3] == ["manager-1", "vps1", "yes"]
    assert sami("agents", "--cluster", "none").out == "(none)\n"


def test_agents_follow_pages_and_rm_forgets_a_gone_agent(
    sami, server, control: FakeControl
) -> None:
    control.agents.append(cluster_pb2.Agent(agent_id="manager-2", cluster="vps1"))
    control.agents.append(cluster_pb2.Agent(agent_id="manager-3", cluster="vps1"))
    listed = sami("agents")  # the fake answers one agent per page
    assert [line.split()[0] for line in listed.lines[1:]] == [
        "manager-1",
        "manager-2",
        "manager-3",
    ]
    removed = sami("agents", "rm", "vps1", "manager-2")
    assert removed.code == 0, removed.err
    assert removed.out == "removed agent manager-2 of cluster vps1\n"
    assert "manager-2" not in sami("agents").out
    connected = sami("agents", "rm", "vps1", "manager-1")
    assert connected.code != 0 and "FAILED_PRECONDITION" in connected.err

"""--output json: what scripts parse."""

from __future__ import annotations

import json
import re

from .fake_control import DIGEST, REF, FakeControl


def test_deploy_wait_prints_one_object_per_event_then_the_deployment(sami, server) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--wait", "-o", "json")
    assert result.code == 0, result.err
    objects = [json.loads(line) for line in result.lines]
    events = [o["event"] for o in objects[:-1]]
    assert [int(e["sequence"]) for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[3]["phase"] == "converge" and events[3]["state"] == "IN_PROGRESS"
    final = objects[-1]["deployment"]
    assert final["id"] == "d1" and final["state"] == "SUCCEEDED"
    assert final["status_message"] == "web converged: 2/2 running"
    assert final["artifact"]["digest"] == DIGEST


def test_deploy_without_wait_prints_the_deployment(sami, server) -> None:
    result = sami("--output", "json", "deploy", "web", "--env", "stage", "--artifact", REF)
    assert result.code == 0
    assert json.loads(result.out)["id"] == "d1"


def test_get_and_list(sami, server, control: FakeControl) -> None:
    for _ in range(5):
        control.add_deployment()
    got = json.loads(sami("get", "deployments/d2", "-o", "json").out)
    assert got["name"] == "deployments/d2" and got["state"] == "SUCCEEDED"
    # Five deployments, pages of at most two: all are fetched, newest first.
    listed = json.loads(sami("list", "--service", "web", "-o", "json").out)
    assert [d["id"] for d in listed] == ["d5", "d4", "d3", "d2", "d1"]
    limited = json.loads(sami("list", "--limit", "3", "-o", "json").out)
    assert len(limited) == 3


def test_artifacts_clusters_agents(sami, server) -> None:
    registered = json.loads(
        sami("-o", "json", "artifact", "register", "web", "--ref", REF, "--tag", "v1").out
    )
    assert registered["id"] == "a1" and registered["tags"] == ["v1"]
    assert json.loads(sami("-o", "json", "artifact", "get", "a1").out)["digest"] == DIGEST
    assert [a["id"] for a in json.loads(sami("-o", "json", "artifact", "list").out)] == ["a1"]
    created = json.loads(sami("-o", "json", "cluster", "create", "vps2", "--env", "production").out)
    assert created["environments"] == ["production"]
    clusters = json.loads(sami("-o", "json", "cluster", "list").out)
    assert [c["cluster_id"] for c in clusters] == ["vps1", "vps2"]
    agents = json.loads(sami("-o", "json", "agents", "--cluster", "vps1").out)
    assert agents[0]["agent_id"] == "manager-1" and agents[0]["connected"] is True


def test_enums_are_named_alike_in_text_and_json(sami, server, control: FakeControl) -> None:
    sami("artifact", "register", "site", "--ref", REF, "--kind", "static_file")
    text = sami("artifact", "get", "a1").out
    assert re.search(r"^kind +static_file$", text, re.M)
    assert json.loads(sami("artifact", "get", "a1", "-o", "json").out)["kind"] == "static_file"

    control.add_deployment()
    text = sami("get", "d1").out
    assert re.search(r"^state +SUCCEEDED$", text, re.M)
    out = sami("get", "d1", "-o", "json").out
    assert json.loads(out)["state"] == "SUCCEEDED"
    # Nested messages too (the artifact's kind, the action): no ProtoJSON prefixes.
    assert "ARTIFACT_KIND_" not in out and "DEPLOYMENT_ACTION_" not in out


def test_manifests_lint_json_wherever_the_option_is(sami, tmp_path) -> None:
    for argv in (
        ("-o", "json", "manifests", "lint", str(tmp_path)),
        ("manifests", "-o", "json", "lint", str(tmp_path)),
        ("manifests", "lint", str(tmp_path), "--output", "json"),
    ):
        result = sami(*argv)
        assert result.code == 1, argv  # No services/ folder: an error.
        report = json.loads(result.out)
        problem = report["problems"][0]
        assert set(problem) >= {"file", "line", "message", "severity", "hint"}
        assert problem["severity"] == "error" and problem["file"] == "services/"

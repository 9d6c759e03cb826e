"""How the swarm executor reads live status: Swarm's timestamps, a hand-made change told
apart from a Sami deployment, and which events name which service."""

from __future__ import annotations

from typing import Any

from sami_agent.executors.swarm_status import _service_of, outside_change, parse_time


def _spec(deployment: str, replicas: int = 3, image: str = "web@sha256:aa") -> dict[str, Any]:
    return {
        "Labels": {"sami.deployment-id": deployment},
        "Mode": {"Replicated": {"Replicas": replicas}},
        "TaskTemplate": {"ContainerSpec": {"Image": image}},
    }


def test_parse_time_reads_swarm_nanoseconds() -> None:
    assert parse_time("2026-12-03T04:40:53.123456789Z") == 1796272853.123456
    assert parse_time("") == 0.0
    assert parse_time("not a time") == 0.0


def test_outside_change_names_what_a_hand_update_changed() -> None:
    assert outside_change(_spec("d1", replicas=1), _spec("d1")) == "replicas 3 -> 1"
    assert outside_change(_spec("d1", image="web:evil"), _spec("d1")) == "image"
    changed_env = _spec("d1")
    changed_env["TaskTemplate"]["ContainerSpec"]["Env"] = ["A=1"]
    assert outside_change(changed_env, _spec("d1")) == "spec"


def test_a_sami_deployment_or_no_previous_spec_is_no_outside_change() -> None:
    assert outside_change(_spec("d2", replicas=1), _spec("d1")) == ""
    assert outside_change(_spec("d1"), None) == ""
    assert outside_change(_spec("d1"), _spec("d1")) == ""


def test_events_name_their_service() -> None:
    assert _service_of({"Type": "service", "Action": "update", "Actor": {"ID": "s1"}}) == "s1"
    task = {"Attributes": {"com.docker.swarm.service.id": "s2"}}
    assert _service_of({"Type": "container", "Action": "die", "Actor": task}) == "s2"
    health = "health_status: unhealthy"
    assert _service_of({"Type": "container", "Action": health, "Actor": task}) == "s2"
    assert _service_of({"Type": "container", "Action": "exec_start: sh", "Actor": task}) == ""
    assert _service_of({"Type": "container", "Action": "die", "Actor": {}}) == ""

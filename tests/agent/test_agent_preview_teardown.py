"""Tearing a preview down when `docker stack rm` races with its tasks: Docker removes the
services, then fails to remove their network "in use by task" while the tasks stop
(moby/moby#32620). The teardown waits and removes the network itself once it is free;
any other failure of `docker stack rm` still fails the teardown.

The engine is a stand-in here (the real one is in tests/swarm/test_swarm_previews.py, where
the race happens now and then): a `docker` script that answers as Docker does, and an SDK
client whose network is in use twice before it can go."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors

from sami_agent.executor import Job, Outcome
from sami_agent.executors import swarm_previews

STACK = "pr-7_shop"
IN_USE = (
    "Removing service pr-7_shop_web\n"
    "Failed to remove network ircn9a5kjiix19d2rdhvqsxya: Error response from daemon: rpc "
    "error: code = FailedPrecondition desc = network ircn9a5kjiix19d2rdhvqsxya is in use by "
    "task 7oxjvmpe335c88mscp2pfgq7dfailed to remove some resources from stack: pr-7_shop\n"
)


class FakeEngine:
    def __init__(self, busy: int) -> None:
        self.services = ["pr-7_shop_web"]
        self.networks = ["pr-7_shop_default"]
        self.busy = busy  # removals refused before the network is free
        self.removals = 0

    def client(self) -> Any:
        def services(filters: dict[str, str]) -> list[Any]:
            return [SimpleNamespace(name=n) for n in self.services]

        def networks(filters: dict[str, str]) -> list[Any]:
            return [SimpleNamespace(name=n) for n in self.networks]

        def remove(name: str) -> None:
            self.removals += 1
            if self.removals <= self.busy:
                raise docker.errors.APIError("network is in use")
            self.networks.remove(name)

        return SimpleNamespace(
            services=SimpleNamespace(list=services),
            networks=SimpleNamespace(
                list=networks,
                get=lambda name: SimpleNamespace(remove=lambda: remove(name)),
            ),
        )


def fake_docker(tmp_path: Path, output: str, engine: FakeEngine) -> str:
    script = tmp_path / "docker"
    script.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{output}EOF\nexit 1\n")
    script.chmod(0o755)
    engine.services.clear()  # `stack rm` removed the services; the network stays
    return str(script)


def job() -> Job:
    return Job(
        deployment_id="d1",
        service="shop",
        environment="pull_request",
        pull_request=7,
        deployment_type="swarm",
        stack_name=STACK,
        artifact_name="shop",
        artifact_ref="r",
        artifact_digest="sha256:" + "a" * 64,
        attempt=1,
        converge_timeout=30.0,
        action="teardown",
    )


def test_a_network_still_in_use_is_waited_for_and_removed(tmp_path: Path) -> None:
    engine = FakeEngine(busy=2)
    lines: list[str] = []
    result = swarm_previews.teardown(
        engine.client(),
        job(),
        lambda phase, message: lines.append(message),
        threading.Event(),
        docker_cli=fake_docker(tmp_path, IN_USE, engine),
    )
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert engine.networks == [] and engine.removals == 3
    assert any("networks still in use" in line for line in lines)


def test_any_other_failure_of_stack_rm_fails_the_teardown(tmp_path: Path) -> None:
    engine = FakeEngine(busy=0)
    other = "Failed to remove service pr-7_shop_web: Error response from daemon: boom\n"
    result = swarm_previews.teardown(
        engine.client(),
        job(),
        lambda phase, message: None,
        threading.Event(),
        docker_cli=fake_docker(tmp_path, other, engine),
    )
    assert result.outcome is Outcome.FAILED
    assert "boom" in result.reason and engine.removals == 0

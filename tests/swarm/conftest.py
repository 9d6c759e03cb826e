"""A real engine, one-node swarm and registry for the whole session (sami_agent.devswarm).

Without the engine packages the Swarm tests skip, except in CI (CI is set), where they fail:
a green CI must never hide that the real-Swarm tests did not run. scripts/install-engine.sh
installs the packages (CI and `make test` run it first).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sami_agent.devswarm import DevSwarm, missing_requirements
from sami_agent.executors.swarm import SwarmExecutor


@dataclass(frozen=True)
class Image:
    ref: str  # REGISTRY/NAME@sha256:...
    digest: str

    @property
    def tagless_repo(self) -> str:
        return self.ref.split("@", 1)[0]


@dataclass(frozen=True)
class Images:
    v1: Image
    v2: Image
    v3: Image  # no /app/healthy: the stack's health check fails


@pytest.fixture(scope="session")
def devswarm() -> Iterator[DevSwarm]:
    missing = missing_requirements()
    if missing:
        message = (
            f"the real-Swarm tests need {', '.join(missing)}: "
            "run scripts/install-engine.sh as root (installs docker.io, docker-registry, "
            "busybox-static)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # A short path: the engine's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="sami-swarm-", dir="/tmp"))
    swarm = DevSwarm(root, progress=lambda line: print(line, flush=True))
    try:
        swarm.start()
        yield swarm
    finally:
        swarm.stop()


@pytest.fixture(scope="session")
def images(devswarm: DevSwarm) -> Images:
    def build(tag: str, files: dict[str, bytes | str]) -> Image:
        ref, digest = devswarm.build_image("shop", tag, files)
        return Image(ref, digest)

    return Images(
        v1=build("v1", {"app/version": "1\n", "app/healthy": "ok\n"}),
        v2=build("v2", {"app/version": "2\n", "app/healthy": "ok\n"}),
        v3=build("v3", {"app/version": "3\n"}),
    )


@pytest.fixture(scope="session")
def executor(devswarm: DevSwarm) -> SwarmExecutor:
    return SwarmExecutor(docker_env=devswarm.env, poll_interval=0.25)

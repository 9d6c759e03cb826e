"""Images and an executor on the session's real engine, swarm and registry (the `devswarm`
fixture of tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sami_agent.executors.swarm import SwarmExecutor
from sami_dev.devswarm import DevSwarm


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

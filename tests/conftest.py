"""Fixtures shared across test folders.

`devswarm`: a real engine, one-node swarm and registry for the whole session
(sami_dev.devswarm), started once however many folders use it. Without the engine
packages the tests that use it skip, except in CI (CI is set), where they fail: a green CI
must never hide that the real-Swarm tests did not run. scripts/install-engine.sh installs
the packages (CI and `make test` run it first).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sami_dev.devswarm import DevSwarm, missing_requirements


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

"""Fixtures shared across test folders.

`devswarm`: a real engine, one-node swarm and registry for the whole session
(sami_dev.devswarm), started once however many folders use it. Without the engine
packages the tests that use it skip, except in CI (CI is set), where they fail: a green CI
must never hide that the real-Swarm tests did not run. scripts/install-engine.sh installs
the packages (CI and `make test` run it first).

`pg_cluster`: a private PostgreSQL cluster for the session (tests/pg.py), and `pg_database`
a fresh database in it for one test (dropped afterwards). Skipped, or failed in CI, like the
Swarm tests, when Debian's `postgresql` package is missing (install-engine.sh installs it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from sami_dev.devswarm import DevSwarm, missing_requirements
from tests.pg import PgCluster, PgDatabase, find_bindir


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make test` (pytest-xdist, --dist loadgroup) every test that uses the real swarm
    runs on the same worker: one engine for all of them, as in a single process. Before
    xdist's own hook, which reads the group."""
    # xdist hands out the largest group first (its scope reorder), so one worker runs the
    # swarm tests while the other takes everything else.
    for item in items:
        if "devswarm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("swarm"))


@pytest.fixture(autouse=True)
def _swarm_services_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the real swarm, the services it left are removed: each test
    deploys its own stacks, and the ones left behind (two replicas each, health-checked
    every second) would keep the engine busy for the rest of the session, slowing every
    later test on this machine."""
    yield
    if "devswarm" not in request.fixturenames:
        return
    swarm: DevSwarm = request.getfixturevalue("devswarm")
    with contextlib.suppress(docker.errors.DockerException):
        for service in swarm.client().services.list():
            with contextlib.suppress(docker.errors.NotFound):
                service.remove()


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
def pg_cluster() -> Iterator[PgCluster]:
    if find_bindir() is None:
        message = (
            "the PostgreSQL tests need initdb, pg_ctl and psql: run "
            "scripts/install-engine.sh as root (installs postgresql)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with PgCluster.started() as cluster:
        yield cluster


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    try:
        yield PgDatabase(name, url, pg_cluster)
    finally:
        pg_cluster.drop_database(name)

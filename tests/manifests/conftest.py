from __future__ import annotations

import pytest
from manifest_fixtures import base_files


@pytest.fixture
def files() -> dict[str, bytes]:
    """A small valid deployments repo, in memory: web (swarm), jobs (cron), site (static)."""
    return base_files()

"""The fault tests reuse the end-to-end stack (tests/e2e/conftest.py)."""

import pytest

from tests.e2e.conftest import stack  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "keepalive(seconds): SAMI_KEEPALIVE_SECONDS of the agent of a network-cut test",
    )

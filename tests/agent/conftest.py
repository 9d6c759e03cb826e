"""Fixtures of the static_file tests (test_agent_static_*.py): the archive server and the
target folder; no proxy from the environment may intercept loopback traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from static_fixtures import ArchiveServer


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    s = ArchiveServer()
    yield s
    s.close()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "www" / "site"

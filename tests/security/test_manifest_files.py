"""Manifest files can hold what stacks use as secrets: their content is readable by admins,
unscoped deployers, and deployers scoped to the file's service; everyone else sees names,
sizes and hashes only. Over the API."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import grpc
import pytest

from sami.v1 import manifest_pb2
from tests import samples
from tests.security.conftest import Server, md, seed


def _get(s: object, token: str, include_files: bool) -> manifest_pb2.ManifestRevision:
    req = manifest_pb2.GetManifestRevisionRequest(name="current", include_files=include_files)
    return s.man.GetManifestRevision(req, metadata=md(token))  # type: ignore[attr-defined,no-any-return]


def test_file_contents_are_readable_only_within_scope(serve: Callable[..., Server]) -> None:
    srv = serve()
    admin = srv.token("admin")
    s, _ = seed(srv, admin)
    repo = samples.repo()

    full = _get(s, admin, True)
    assert {f.path: f.content for f in full.files} == repo
    assert all(f.sha256 == hashlib.sha256(f.content).hexdigest() for f in full.files)
    unscoped = _get(s, srv.token("deployer", "ci-all"), True)
    assert {f.path: f.content for f in unscoped.files} == repo

    # A deployer scoped to web reads web's folder, and nothing else.
    web = _get(s, srv.token("deployer", "ci-web", services=["web"]), True)
    assert {f.path: f.content for f in web.files} == {
        p: c for p, c in repo.items() if p.startswith("services/web/")
    }

    # Everyone who may read sees every file's name, size and hash, no content.
    reader = srv.token("reader", "dashboard")
    listed = _get(s, reader, False)
    assert [(f.path, f.size, f.sha256) for f in listed.files] == [
        (p, len(repo[p]), hashlib.sha256(repo[p]).hexdigest()) for p in sorted(repo)
    ]
    assert not any(f.content for f in listed.files)

    refused = {
        "reader": reader,
        "deployer of a service without files": srv.token("deployer", "ci-db", services=["db"]),
        "deployer scoped to environments": srv.token(
            "deployer", "ci-stage", environments=["stage"]
        ),
    }
    for who, token in refused.items():
        with pytest.raises(grpc.RpcError) as err:
            _get(s, token, True)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED, who
        assert "by name and hash" in (err.value.details() or ""), who

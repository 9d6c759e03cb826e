"""The storage conformance suite, continued: the clusters' recipients, secret versions,
variables and what a deployment records of them, on every backend (the fixtures are
test_storage.py's)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sami_control.core.model import Recipient, SecretVersion, Variable
from sami_control.core.store import Conflict
from tests.control.test_storage import OpenStore, dep, open_store, seed

__all__ = ["open_store"]  # the fixture, for pytest

# Arbitrary bytes, not UTF-8: ciphertext must come back byte for byte.
CIPHERTEXT = b"age-encryption.org/v1\n\x00\xff\xfe binary"


def version(name: str, v: int, service: str = "web", env: str = "stage") -> SecretVersion:
    return SecretVersion(
        service=service,
        environment=env,
        name=name,
        version=v,
        ciphertext=CIPHERTEXT + bytes([v]),
        recipients=["age1b", "age1a"],
        set_by="alice",
        set_at=float(v),
    )


async def test_recipients_round_trip_replace_and_delete(open_store: OpenStore) -> None:
    s = await open_store()
    a = Recipient("c1", "age1zzz", "manager-1", "agent manager-1", 1.0, 1.0)
    escrow = Recipient("c1", "age1aaa", "", "admin", 2.0, 0.0, "escrow key, in the safe")
    async with s.tx() as tx:
        await tx.put_recipient(a)
        await tx.put_recipient(escrow)
        await tx.put_recipient(Recipient("c2", "age1mmm", "m", "agent m", 3.0, 3.0))
        await tx.put_recipient(replace(a, last_seen_at=9.0))  # a later Hello
    s = await open_store()  # a restart (or another replica) sees them
    async with s.tx() as tx:
        assert await tx.get_recipient("c1", "age1zzz") == replace(a, last_seen_at=9.0)
        assert await tx.get_recipient("c2", "age1zzz") is None
        assert [r.recipient for r in await tx.list_recipients("c1")] == ["age1aaa", "age1zzz"]
        assert [r.cluster for r in await tx.list_recipients()] == ["c1", "c1", "c2"]
        assert await tx.delete_recipient("c1", "age1aaa")
        assert not await tx.delete_recipient("c1", "age1aaa")
        assert [r.recipient for r in await tx.list_recipients("c1")] == ["age1zzz"]


async def test_secret_versions_latest_removed_and_by_version(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        for v in (version("db", 1), version("db", 2), version("api_key", 1)):
            await tx.insert_secret_version(v)
        await tx.insert_secret_version(version("db", 1, env="production"))
        await tx.insert_secret_version(version("db", 1, service="api"))
    with pytest.raises(Conflict):
        async with s.tx() as tx:
            await tx.insert_secret_version(version("db", 2))  # versions are never rewritten
    s = await open_store()
    async with s.tx() as tx:
        latest = await tx.latest_secrets("web", "stage", ciphertexts=True)
        assert [(v.name, v.version) for v in latest] == [("api_key", 1), ("db", 2)]
        assert latest[1] == replace(version("db", 2), recipients=["age1a", "age1b"])
        # Names and versions only, unless the ciphertexts are asked for.
        light = await tx.latest_secrets("web", "stage")
        assert light == [replace(v, ciphertext=b"") for v in latest]
        every = await tx.latest_secrets()
        assert [(v.service, v.environment, v.name) for v in every] == [
            ("api", "stage", "db"),
            ("web", "production", "db"),
            ("web", "stage", "api_key"),
            ("web", "stage", "db"),
        ]
        assert len(await tx.latest_secrets(environment="stage")) == 3
        await tx.mark_secret_removed("web", "stage", "db", 2, 50.0)
    async with s.tx() as tx:
        latest = await tx.latest_secrets("web", "stage")
        assert [(v.name, v.removed) for v in latest] == [("api_key", False), ("db", True)]
        # A rollback still reads the versions it recorded, removed or older.
        old = await tx.get_secret_versions("web", "stage", {"db": 1, "api_key": 1, "gone": 3})
        assert [(v.name, v.version, v.ciphertext) for v in old] == [
            ("api_key", 1, CIPHERTEXT + b"\x01"),
            ("db", 1, CIPHERTEXT + b"\x01"),
        ]


async def test_variables_round_trip_replace_and_delete(open_store: OpenStore) -> None:
    s = await open_store()
    async with s.tx() as tx:
        await tx.put_variable(Variable("web", "stage", "REPLICAS", "2", "alice", 1.0))
        await tx.put_variable(Variable("web", "stage", "DOMAIN", "a.example", "alice", 1.0))
        await tx.put_variable(Variable("web", "production", "REPLICAS", "5", "bob", 2.0))
        await tx.put_variable(Variable("web", "stage", "REPLICAS", "3", "bob", 3.0))
    s = await open_store()
    async with s.tx() as tx:
        stage = await tx.list_variables("web", "stage")
        assert [(v.name, v.value, v.set_by) for v in stage] == [
            ("DOMAIN", "a.example", "alice"),
            ("REPLICAS", "3", "bob"),
        ]
        assert len(await tx.list_variables()) == 3
        assert await tx.delete_variable("web", "stage", "DOMAIN")
        assert not await tx.delete_variable("web", "stage", "DOMAIN")
        assert [v.name for v in await tx.list_variables(service="web")] == [
            "REPLICAS",
            "REPLICAS",
        ]


async def test_a_deployment_keeps_the_versions_and_variables_it_recorded(
    open_store: OpenStore,
) -> None:
    s = await open_store()
    await seed(s)
    d = replace(dep(1), secrets={"db": 2, "api_key": 1}, variables={"DOMAIN": "a.example"})
    async with s.tx() as tx:
        await tx.insert_deployment(d)
        await tx.insert_deployment(dep(2))
    s = await open_store()
    async with s.tx() as tx:
        got = await tx.get_deployment("dep_1")
        assert got is not None
        assert got.secrets == {"db": 2, "api_key": 1}
        assert got.variables == {"DOMAIN": "a.example"}
        plain = await tx.get_deployment("dep_2")
        assert plain is not None and plain.secrets == {} and plain.variables == {}

"""`sami secret`, `sami var` and `sami cluster recipient(s)` through the real CLI against the
real server (gRPC on a loopback socket, SQLite): round trips, scopes, refusals that store
nothing, rekeying, the age command line opening what the CLI stored, and an agent's Hello
registering its key and its assignment carrying the recorded ciphertexts."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Queue

import grpc
import pyrage
import pytest

from sami.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
)
from sami_control import offline
from tests import samples
from tests.client.cli_result import Result
from tests.control.conftest import LiveServer

Sami = Callable[..., Result]
REF = "127.0.0.1:5000/web@sha256:" + "a" * 64
AGE = "/usr/bin/age"


# The in-process server logs to the same stdout the CLI prints on.
_SERVER_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[.*\n?", re.MULTILINE)


@pytest.fixture
def sami(sami: Sami) -> Sami:
    """The CLI in-process, its stdout without the server's log lines."""

    def run(*argv: str) -> Result:
        r = sami(*argv)
        return Result(r.code, _SERVER_LOG.sub("", r.out), r.err)

    return run


@pytest.fixture
def admin(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    """The live server with a cluster c1 (stage, production), and SAMI_ADDR and an admin
    SAMI_TOKEN set for the CLI."""
    offline.add_cluster(live_server.data, "c1", ["stage", "production"])
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("admin"))
    return live_server


def stdin(monkeypatch: pytest.MonkeyPatch, value: bytes) -> None:
    """What the next command reads on stdin (a pipe, not a terminal)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(value)))


def key_file(path: Path) -> tuple[Path, str]:
    """A new age identity file (as age-keygen writes it) and its recipient."""
    key = pyrage.x25519.Identity.generate()
    recipient = str(key.to_public())
    path.write_text(f"# public key: {recipient}\n{key}\n")
    path.chmod(0o600)
    return path, recipient


def stored(srv: LiveServer) -> list[tuple[str, int, bool]]:
    """(name, version, removed) of the newest version of each secret, in the store."""

    async def read() -> list[tuple[str, int, bool]]:
        async with srv.server.core.store.tx() as tx:
            return [(v.name, v.version, v.removed) for v in await tx.latest_secrets()]

    return asyncio.run_coroutine_threadsafe(read(), srv.loop).result(10)


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def exported(srv: LiveServer, service: str = "web") -> dict[str, bytes]:
    """The current ciphertexts of service/stage, by name (ExportSecrets)."""
    with grpc.insecure_channel(srv.addr) as ch:
        got = secret_pb2_grpc.SecretServiceStub(ch).ExportSecrets(
            secret_pb2.ExportSecretsRequest(service=service, environment="stage"),
            metadata=md(os.environ["SAMI_TOKEN"]),
        )
    return {p.name: p.ciphertext for p in got.secrets}


def test_secret_set_list_rm_round_trip(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys, recipient = key_file(tmp_path / "escrow.key")
    added = sami("cluster", "recipient", "add", "c1", recipient, "--label", "escrow")
    assert added.code == 0, added.err
    stdin(monkeypatch, b"s3cret-from-stdin")
    first = sami("secret", "set", "web", "db_password", "--env", "stage")
    assert first.code == 0, first.err
    assert first.out == (
        "secret db_password of web in stage: version 1, encrypted to the 1 recipients of "
        "cluster c1\n"
    )
    value_file = tmp_path / "value"
    value_file.write_bytes(b"s3cret-from-a-file\n")
    second = sami(
        "secret", "set", "web", "db_password", "--env", "stage", "--from-file", str(value_file)
    )
    assert second.code == 0, second.err and "version 2" in second.out
    listed = sami("secret", "list", "web")
    assert listed.lines[0].split() == [
        "SERVICE",
        "ENV",
        "NAME",
        "VERSION",
        "SET",
        "BY",
        "SET",
        "AT",
        "STATUS",
    ]
    assert listed.lines[1].split()[:5] == ["web", "stage", "db_password", "2", "t-admin"]
    assert listed.lines[1].split()[-1] == "ok"
    as_json = json.loads(sami("secret", "list", "--env", "stage", "-o", "json").out)
    (one,) = as_json["secrets"]
    assert one["name"] == "db_password" and one["version"] == 2 and one["recipients"] == [recipient]
    # The value set is what the key opens, byte for byte (a final newline included).
    identity = pyrage.x25519.Identity.from_str(keys.read_text().splitlines()[1])
    assert pyrage.decrypt(exported(admin)["db_password"], [identity]) == b"s3cret-from-a-file\n"

    removed = sami("secret", "rm", "web", "db_password", "--env", "stage")
    assert removed.code == 0, removed.err
    assert "version 2 stays for rollbacks" in removed.out
    assert sami("secret", "list").lines[1].split()[-1] == "removed"
    again = sami("secret", "rm", "web", "db_password", "--env", "stage")
    assert again.code == 2 and "is not set" in again.err
    assert stored(admin) == [("db_password", 2, True)]


def test_bad_input_is_refused_and_nothing_stored(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stdin(monkeypatch, b"value")
    no_keys = sami("secret", "set", "web", "db", "--env", "stage")
    assert no_keys.code == 2
    assert "cluster c1 has no recipients yet" in no_keys.err
    assert "sami cluster recipient add c1" in no_keys.err
    _, recipient = key_file(tmp_path / "k")
    assert sami("cluster", "recipient", "add", "c1", recipient).code == 0
    stdin(monkeypatch, b"value")
    no_cluster = sami("secret", "set", "web", "db", "--env", "pull_request")
    assert no_cluster.code == 2 and "no cluster serves environment 'pull_request'" in no_cluster.err
    stdin(monkeypatch, b"value")
    bad_name = sami("secret", "set", "web", "db/password", "--env", "stage")
    assert bad_name.code == 2 and "as Swarm names secrets" in bad_name.err
    stdin(monkeypatch, b"")
    empty = sami("secret", "set", "web", "db", "--env", "stage")
    assert empty.code == 2 and "the value from stdin is empty" in empty.err
    stdin(monkeypatch, b"x" * (500 * 1024 + 1))
    big = sami("secret", "set", "web", "db", "--env", "stage")
    assert big.code == 2 and "more than Swarm's limit" in big.err
    missing = sami(
        "secret", "set", "web", "db", "--env", "stage", "--from-file", str(tmp_path / "nope")
    )
    assert missing.code == 2 and "cannot read" in missing.err
    bad_key = sami("cluster", "recipient", "add", "c1", "age1notakey")
    assert bad_key.code == 2 and "not a valid age X25519 recipient" in bad_key.err
    not_a_var = sami("var", "set", "web", "DOMAIN", "--env", "stage")
    assert not_a_var.code == 2 and "NAME=VALUE" in not_a_var.err
    bad_var = sami("var", "set", "web", "1X=2", "--env", "stage")
    assert bad_var.code == 2 and "variable name '1X'" in bad_var.err
    assert stored(admin) == []
    assert sami("var", "list").out == "no variables\n"
    # A value uploaded in plain text, past the CLI, is refused by the server.
    with grpc.insecure_channel(admin.addr) as ch:
        stub = secret_pb2_grpc.SecretServiceStub(ch)
        keys = stub.GetRecipients(
            secret_pb2.GetRecipientsRequest(service="web", environment="stage"),
            metadata=md(os.environ["SAMI_TOKEN"]),
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.SetSecret(
                secret_pb2.SetSecretRequest(
                    service="web",
                    environment="stage",
                    name="db",
                    ciphertext=b"hunter2",
                    recipients_digest=keys.recipients_digest,
                ),
                metadata=md(os.environ["SAMI_TOKEN"]),
            )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "is not an age file" in (refused.value.details() or "")
    assert stored(admin) == []


def test_scopes(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, recipient = key_file(tmp_path / "k")
    assert sami("cluster", "recipient", "add", "c1", recipient).code == 0
    reader = offline.add_token(admin.data, "reader", "viewer").plaintext
    ci_api = offline.add_token(admin.data, "deployer", "ci-api", services=["api"]).plaintext
    ci_web = offline.add_token(admin.data, "deployer", "ci-web", services=["web"]).plaintext
    for token, says in (
        (reader, "has role reader"),
        (ci_api, "may manage the secrets and variables of only api"),
    ):
        stdin(monkeypatch, b"value")
        refused = sami("secret", "set", "web", "db", "--env", "stage", "--token", token)
        assert refused.code == 2 and "PERMISSION_DENIED" in refused.err and says in refused.err
        refused = sami("var", "set", "web", "A=1", "--env", "stage", "--token", token)
        assert refused.code == 2 and "PERMISSION_DENIED" in refused.err
    assert stored(admin) == []
    stdin(monkeypatch, b"value")
    assert sami("secret", "set", "web", "db", "--env", "stage", "--token", ci_web).code == 0
    assert sami("var", "set", "web", "A=1", "--env", "stage", "--token", ci_web).code == 0
    # Readers list names and versions, and variables (which are not secret).
    assert "db" in sami("secret", "list", "--token", reader).out
    assert "A" in sami("var", "list", "--token", reader).out
    # A token scoped to another service sees none of web's.
    assert sami("secret", "list", "--token", ci_api).out == "no secrets\n"
    # Recipients are an admin's.
    refused = sami("cluster", "recipients", "--token", ci_web)
    assert refused.code == 2 and "PERMISSION_DENIED" in refused.err


def test_variables_round_trip(sami: Sami, admin: LiveServer) -> None:
    assert sami("var", "set", "web", "DOMAIN=web.example", "--env", "stage").out == (
        "DOMAIN=web.example for web in stage\n"
    )
    assert sami("var", "set", "web", "EMPTY=", "--env", "stage").code == 0
    assert sami("var", "set", "web", "DOMAIN=web2.example", "--env", "stage").code == 0
    listed = json.loads(sami("var", "list", "web", "-o", "json").out)["variables"]
    assert [(v["name"], v["value"]) for v in listed] == [("DOMAIN", "web2.example"), ("EMPTY", "")]
    assert sami("var", "rm", "web", "EMPTY", "--env", "stage").code == 0
    gone = sami("var", "rm", "web", "EMPTY", "--env", "stage")
    assert gone.code == 2 and "is not set" in gone.err
    assert "DOMAIN" in sami("var", "list", "--env", "stage").out


def test_rekey_reencrypts_to_the_current_recipients(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    escrow, escrow_recipient = key_file(tmp_path / "escrow.key")
    host, host_recipient = key_file(tmp_path / "host.key")
    assert sami("cluster", "recipient", "add", "c1", escrow_recipient).code == 0
    for name, value in (("db", b"one"), ("api_key", b"two")):
        stdin(monkeypatch, value)
        assert sami("secret", "set", "web", name, "--env", "stage").code == 0
    assert (
        sami("cluster", "recipient", "add", "c1", host_recipient, "--label", "new host").code == 0
    )
    stale = sami("secret", "list", "web", "--env", "stage")
    assert all(line.endswith("stale recipients: rekey") for line in stale.lines[1:]), stale.out
    recipients = sami("cluster", "recipients", "c1")
    assert host_recipient in recipients.out and "new host" in recipients.out

    wrong, _ = key_file(tmp_path / "wrong.key")
    refused = sami("secret", "rekey", "web", "--env", "stage", "--identity", str(wrong))
    assert refused.code == 2 and "not encrypted to the identity" in refused.err
    rekeyed = sami("secret", "rekey", "web", "--env", "stage", "--identity", str(escrow))
    assert rekeyed.code == 0, rekeyed.err
    assert "api_key: version 1 → 2" in rekeyed.err and "db: version 1 → 2" in rekeyed.err
    assert "rekeyed 2 of 2 secrets" in rekeyed.out
    assert all(line.endswith(" ok") for line in sami("secret", "list").lines[1:])
    # The new host's key opens them now.
    host_key = pyrage.x25519.Identity.from_str(host.read_text().splitlines()[1])
    opened = {n: pyrage.decrypt(c, [host_key]) for n, c in exported(admin).items()}
    assert opened == {"db": b"one", "api_key": b"two"}
    # A lost host: its key goes.
    assert sami("cluster", "recipient", "rm", "c1", host_recipient).code == 0
    assert host_recipient not in sami("cluster", "recipients").out


@pytest.mark.skipif(
    not Path(AGE).exists() and not os.environ.get("CI"),
    reason="the age command line is not installed (scripts/install-engine.sh installs it)",
)
def test_the_age_command_line_opens_what_sami_stored(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keygen = shutil.which("age-keygen")
    key = tmp_path / "cluster.key"
    if keygen:  # the key as an operator makes it
        subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            [keygen, "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
    else:
        key, recipient = key_file(key)
    assert sami("cluster", "recipient", "add", "c1", recipient).code == 0
    stdin(monkeypatch, b"opened by age\x00\xff")
    assert sami("secret", "set", "web", "db", "--env", "stage").code == 0
    sealed = tmp_path / "db.age"
    sealed.write_bytes(exported(admin)["db"])
    out = subprocess.run([AGE, "-d", "-i", str(key), str(sealed)], capture_output=True, check=True)
    assert out.stdout == b"opened by age\x00\xff"


class FakeAgent:
    """An agent's stream over the real API: Hello (with its age recipient), then what the
    control plane sends it."""

    def __init__(self, addr: str, token: str, agent_id: str, recipient: str) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.outgoing: Queue[agent_pb2.AgentMessage | None] = Queue()
        self.outgoing.put(
            agent_pb2.AgentMessage(
                hello=agent_pb2.Hello(
                    agent_id=agent_id, version="test", capabilities=["swarm"], recipient=recipient
                )
            )
        )
        self.stream = agent_pb2_grpc.AgentServiceStub(self.channel).Connect(
            self._messages(), metadata=md(token), timeout=60
        )
        self.incoming = iter(self.stream)
        first = next(self.incoming)
        assert first.WhichOneof("msg") == "welcome", first

    def _messages(self) -> Iterator[agent_pb2.AgentMessage]:
        while (m := self.outgoing.get()) is not None:
            yield m

    def assignment(self) -> agent_pb2.Assignment:
        for m in self.incoming:
            if m.WhichOneof("msg") == "assignment":
                return m.assignment
        raise AssertionError("the stream ended without an assignment")

    def close(self) -> None:
        self.outgoing.put(None)
        self.stream.cancel()
        self.channel.close()


def test_an_agents_key_and_the_assignment_that_carries_the_recorded_versions(
    sami: Sami, admin: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = os.environ["SAMI_TOKEN"]
    with grpc.insecure_channel(admin.addr) as ch:
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[
                    manifest_pb2.ManifestFile(path=p, content=c) for p, c in samples.repo().items()
                ]
            ),
            metadata=md(token),
        )
        artifact = (
            artifact_pb2_grpc.ArtifactServiceStub(ch)
            .RegisterArtifact(
                artifact_pb2.RegisterArtifactRequest(
                    artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
                ),
                metadata=md(token),
            )
            .artifact.id
        )
    key = pyrage.x25519.Identity.generate()
    agent_token = offline.add_token(admin.data, "agent", "agent-c1", cluster="c1").plaintext
    agent = FakeAgent(admin.addr, agent_token, "manager-1", str(key.to_public()))
    try:
        recipients = json.loads(sami("cluster", "recipients", "c1", "-o", "json").out)["recipients"]
        assert [(r["recipient"], r["agent_id"]) for r in recipients] == [
            (str(key.to_public()), "manager-1")
        ]
        assert "recipient.register" in sami("audit").out
        stdin(monkeypatch, b"v1")
        assert sami("secret", "set", "web", "db", "--env", "stage").code == 0
        assert sami("var", "set", "web", "DOMAIN=one.example", "--env", "stage").code == 0
        first = sami("deploy", "web", "--env", "stage", "--artifact", artifact, "-o", "json")
        assert first.code == 0, first.err
        dep = json.loads(first.out)
        assert dep["secrets"] == [{"name": "db", "version": 1}]
        assert dep["variables"] == {"DOMAIN": "one.example"}
        assigned = agent.assignment()
        assert assigned.deployment.id == dep["id"]
        assert [(s.name, s.version) for s in assigned.secrets] == [("db", 1)]
        assert pyrage.decrypt(assigned.secrets[0].ciphertext, [key]) == b"v1"
        assert dict(assigned.deployment.variables) == {"DOMAIN": "one.example"}
        got = json.loads(sami("get", dep["id"], "-o", "json").out)
        assert got["secrets"] == [{"name": "db", "version": 1}]
        shown = [line.split() for line in sami("get", dep["id"]).lines]
        assert ["secrets", "db", "v1"] in shown and ["variables", "DOMAIN=one.example"] in shown
    finally:
        agent.close()

"""A secret's value never lands anywhere on the control plane's side: it is set through the
real `sami` CLI (a process, the value on its stdin), then looked for in the data folder
(the SQLite files, WAL included), a `sami-control backup`, the server's log (debug lines
included), `sami audit`, and every answer of the API that is about secrets or deployments.
Only ciphertext is found, which the cluster's key opens (so we looked at the right bytes)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pyrage

from sami.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
)
from tests import samples
from tests.harness import PY, ControlPlane, base_env, sami

REF = "127.0.0.1:5000/web@sha256:" + "a" * 64


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _sami_with_stdin(control: ControlPlane, token: str, value: bytes, *args: str) -> str:
    out = subprocess.run(
        [PY, "-m", "sami_client", *args],
        input=value,
        capture_output=True,
        env=base_env(SAMI_ADDR=control.addr, SAMI_TOKEN=token),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return (out.stdout + out.stderr).decode()


def test_a_secret_value_is_nowhere_but_in_its_ciphertext(tmp_path: Path) -> None:
    value = f"plaintext-{secrets.token_hex(16)}"
    control = ControlPlane(tmp_path)
    control.cluster("c1", "stage")
    admin = control.token("admin", name="root")
    agent_key = pyrage.x25519.Identity.generate()
    escrow_file = tmp_path / "escrow.key"
    escrow_key = pyrage.x25519.Identity.generate()
    escrow_file.write_text(f"{escrow_key}\n")
    control.start()
    answers: list[str] = []  # every answer the CLI and the API gave
    try:
        for key, label in ((agent_key, "host"), (escrow_key, "escrow")):
            r = sami(control, admin, "cluster", "recipient", "add", "c1", str(key.to_public()))
            assert r.rc == 0, r.err
            answers.append(r.out + r.err + label)
        answers.append(
            _sami_with_stdin(
                control, admin, value.encode(), "secret", "set", "web", "db", "--env", "stage"
            )
        )
        answers.append(
            _sami_with_stdin(
                control,
                admin,
                b"",
                "secret",
                "rekey",
                "web",
                "--env",
                "stage",
                "--identity",
                str(escrow_file),
            )
        )
        with grpc.insecure_channel(control.addr) as ch:
            manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
                manifest_pb2.SyncManifestsRequest(
                    files=[
                        manifest_pb2.ManifestFile(path=p, content=c)
                        for p, c in samples.repo().items()
                    ]
                ),
                metadata=_md(admin),
            )
            artifact_pb2_grpc.ArtifactServiceStub(ch).RegisterArtifact(
                artifact_pb2.RegisterArtifactRequest(
                    artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
                ),
                metadata=_md(admin),
            )
            stub = secret_pb2_grpc.SecretServiceStub(ch)
            exported = stub.ExportSecrets(
                secret_pb2.ExportSecretsRequest(service="web", environment="stage"),
                metadata=_md(admin),
            )
            listed = stub.ListSecrets(secret_pb2.ListSecretsRequest(), metadata=_md(admin))
        (payload,) = exported.secrets
        # The ciphertext it holds is the value's, which the cluster's key opens.
        assert pyrage.decrypt(payload.ciphertext, [agent_key]) == value.encode()
        answers += [repr(exported.SerializeToString()), repr(listed.SerializeToString())]
        deployed = sami(
            control, admin, "deploy", "web", "--env", "stage", "--artifact", REF, "-o", "json"
        )
        assert deployed.rc == 0, deployed.err
        dep = json.loads(deployed.out)
        assert dep["secrets"] == [{"name": "db", "version": 2}]
        for args in (
            ("get", dep["id"], "-o", "json"),
            ("history", "web", "--env", "stage", "-o", "json"),
            ("secret", "list", "-o", "json"),
            ("audit", "-o", "json"),
            ("audit",),
        ):
            r = sami(control, admin, *args)
            assert r.rc == 0, (args, r.err)
            answers.append(r.out + r.err)
        assert any("secret.rekey" in a for a in answers)  # the audit was read
        backup = tmp_path / "backup.db"
        out = subprocess.run(
            [PY, "-m", "sami_control", "backup", str(backup), "--data", str(control.data)],
            capture_output=True,
            env=base_env(),
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    finally:
        control.kill(signal.SIGTERM)
    time.sleep(0.2)
    files = sorted(p for p in control.data.rglob("*") if p.is_file())
    assert any(p.name.endswith("-wal") or p.name.endswith(".db") for p in files), files
    stored = b"".join(p.read_bytes() for p in files)
    assert payload.ciphertext in stored  # the ciphertext is stored, so we read the right files
    log = control.log_path.read_bytes()
    assert b"secret" in log or b"serving" in log
    needle = value.encode()
    for where, blob in (
        ("the data folder", stored),
        ("the backup", backup.read_bytes()),
        ("the server's log", log),
    ):
        assert needle not in blob, f"the value is in {where}"
    for answer in answers:
        assert value not in answer, f"the value is in an answer: {answer[:200]}"

"""Several replicas over TLS (`SAMI_ADDR=a:7443,b:7443`, `SAMI_CA`): each replica's
certificate is checked against the name that replica is dialled by, not the first's.

The replica here has a certificate that names `localhost` only (no IP address), signed by
the CA the client trusts. Dialled second as `localhost` it is accepted; dialled second as
`127.0.0.1` it is refused, although `localhost` (the first address's name) would match."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sami_client import cli
from sami_control import offline, tlsinit
from tests.security.conftest import Server


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _localhost_only_certificate(pki: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = pki / "localhost.pem", pki / "localhost-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_each_replica_is_checked_against_its_own_host_name(
    serve: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pki = tmp_path / "pki"
    tlsinit.init(pki)
    cert, key = _localhost_only_certificate(pki)
    srv = serve(tls_cert=cert, tls_key=key)
    offline.add_cluster(srv.data, "c1", ["stage"])
    port = srv.addr.rsplit(":", 1)[1]
    monkeypatch.setenv("SAMI_TOKEN", srv.token("admin"))
    monkeypatch.setenv("SAMI_CA", str(pki / "ca.pem"))

    monkeypatch.setenv("SAMI_ADDR", f"127.0.0.1:{_dead_port()},localhost:{port}")
    assert cli.main(["cluster", "list"]) == 0, capsys.readouterr().err
    assert "c1" in capsys.readouterr().out

    first = f"localhost:{_dead_port()}"
    monkeypatch.setenv("SAMI_ADDR", f"{first},127.0.0.1:{port}")
    assert cli.main(["cluster", "list"]) == 3
    err = capsys.readouterr().err
    assert f"no replica of sami-control answered (tried {first} or 127.0.0.1:{port})" in err
    [line] = [x for x in err.splitlines() if x.startswith(f"sami:   127.0.0.1:{port}: ")]
    assert "verification" in line.lower()  # The handshake refused the name, not the port.

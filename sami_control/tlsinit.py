"""`sami-control tls init DIR`: a private CA, a server certificate and client certificates.

For a team without a PKI: the CA signs the control plane's certificate (SANs: 127.0.0.1,
localhost and every --host) and one client certificate per agent (and per other client, for
mTLS). Keys are ECDSA P-256, written 0600; nothing is overwritten. Keep ca-key.pem offline
once the certificates are made: whoever has it can mint certificates the server trusts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


class TLSInitError(Exception):
    pass


@dataclass(frozen=True)
class Made:
    """Paths of what `init` wrote."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (cert, key)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sami"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)  # whatever the umask said


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_names(kind: str, names: Sequence[str]) -> None:
    for n in names:
        if not _NAME.fullmatch(n):
            raise TLSInitError(f"{kind} name {n!r} must be 1-128 letters, digits, '.', '_' or '-'")


def init(
    out: Path,
    hosts: Sequence[str] = (),
    agents: Sequence[str] = (),
    clients: Sequence[str] = (),
    days: int = 825,
    ca_days: int = 3650,
    now: datetime.datetime | None = None,
) -> Made:
    _check_names("host", hosts)
    _check_names("agent", agents)
    _check_names("client", clients)
    if days <= 0 or ca_days <= 0:
        raise TLSInitError("--days must be positive")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = {f"agent-{a}" for a in agents} | {f"client-{c}" for c in clients}
    files = ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"]
    for n in sorted(names):
        files += [f"{n}.pem", f"{n}-key.pem"]
    existing = [f for f in files if (out / f).exists()]
    if existing:
        raise TLSInitError(
            f"{out} already holds {', '.join(existing)}: nothing was written (move them "
            "away, or choose another folder)"
        )
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)

    ca_key = _key()
    ca_name = _name("Sami CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        cn: str, usage: x509.ObjectIdentifier, sans: Sequence[str]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            b = b.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in sans]), critical=False
            )
        return b.sign(ca_key, hashes.SHA256()), key

    server_hosts = list(dict.fromkeys(["127.0.0.1", "localhost", "::1", *hosts]))
    server_cert, server_key = leaf(
        hosts[0] if hosts else "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_hosts
    )

    _write(out / "ca.pem", _pem_cert(ca_cert), private=False)
    _write(out / "ca-key.pem", _pem_key(ca_key), private=True)
    _write(out / "server.pem", _pem_cert(server_cert), private=False)
    _write(out / "server-key.pem", _pem_key(server_key), private=True)
    made: dict[str, tuple[Path, Path]] = {}
    for n in sorted(names):
        cert, key = leaf(n, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        _write(out / f"{n}.pem", _pem_cert(cert), private=False)
        _write(out / f"{n}-key.pem", _pem_key(key), private=True)
        made[n] = (out / f"{n}.pem", out / f"{n}-key.pem")
    return Made(
        out / "ca.pem", out / "ca-key.pem", out / "server.pem", out / "server-key.pem", made
    )

"""TLS and mTLS over real sockets on 127.0.0.1: `sami-control tls init` makes the files, the
server serves them, clients and agents trust SAMI_CA and present SAMI_CLIENT_CERT/KEY."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from sami.v1 import deployment_pb2
from sami_client import cli
from sami_client.client import SamiClient
from sami_client.errors import SamiError
from sami_common.dial import Endpoint
from sami_control import cli as control_cli
from sami_control import offline, tlsinit
from sami_control.server import ControlServer, ListenRefused, ServeConfig
from tests.harness import Proc, base_env, free_port
from tests.security.conftest import Server, Stubs, create, md, seed

PY = sys.executable


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert control_cli.main(["tls", "init", str(d), "--agent", "a1", "--client", "ci"]) == 0
    return d


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other-pki")
    tlsinit.init(d, clients=["ci"])
    return d


def tls_server(serve: Callable[..., Server], pki: Path, mtls: bool = False) -> Server:
    return serve(
        tls_cert=pki / "server.pem",
        tls_key=pki / "server-key.pem",
        client_ca=pki / "ca.pem" if mtls else None,
    )


def test_tls_init_writes_a_ca_a_server_and_client_certificates(pki: Path) -> None:
    names = sorted(p.name for p in pki.iterdir())
    assert names == [
        "agent-a1-key.pem",
        "agent-a1.pem",
        "ca-key.pem",
        "ca.pem",
        "client-ci-key.pem",
        "client-ci.pem",
        "server-key.pem",
        "server.pem",
    ]
    for p in pki.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o600 if p.name.endswith("-key.pem") else 0o644), (p.name, oct(mode))
    server = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    assert server.issuer == ca.subject
    agent = x509.load_pem_x509_certificate((pki / "agent-a1.pem").read_bytes())
    usage = agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage
    # Nothing is ever overwritten.
    assert control_cli.main(["tls", "init", str(pki)]) == 2
    with pytest.raises(tlsinit.TLSInitError):
        tlsinit.init(pki, hosts=["bad name"])


def test_tls_with_sami_ca(serve: Callable[..., Server], pki: Path) -> None:
    srv = tls_server(serve, pki)
    admin = srv.token("admin")
    offline.add_cluster(srv.data, "c1", ["stage"])
    ep = Endpoint(addr=srv.addr, token=admin, ca_file=str(pki / "ca.pem"))
    with SamiClient(ep) as client:
        assert [c.cluster_id for c in client.list_clusters()] == ["c1"]
    # Also as `localhost` (a DNS SAN).
    ep = Endpoint(addr=srv.addr.replace("127.0.0.1", "localhost"), token=admin, ca_file=ep.ca_file)
    with SamiClient(ep) as client:
        assert [c.cluster_id for c in client.list_clusters()] == ["c1"]
    # Plaintext gets nowhere: the server speaks TLS only.
    with SamiClient(Endpoint(addr=srv.addr, token=admin), call_timeout=5) as client:
        with pytest.raises(SamiError) as ei:
            client.list_clusters()
        assert ei.value.code is grpc.StatusCode.UNAVAILABLE


def test_a_wrong_ca_fails_with_unavailable_and_says_what_to_check(
    serve: Callable[..., Server],
    pki: Path,
    other_pki: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv = tls_server(serve, pki)
    admin = srv.token("admin")
    ep = Endpoint(addr=srv.addr, token=admin, ca_file=str(other_pki / "ca.pem"))
    with SamiClient(ep, call_timeout=5) as client, pytest.raises(SamiError) as ei:
        client.list_clusters()
    assert ei.value.code is grpc.StatusCode.UNAVAILABLE
    monkeypatch.setenv("SAMI_ADDR", srv.addr)
    monkeypatch.setenv("SAMI_TOKEN", admin)
    monkeypatch.setenv("SAMI_CA", str(other_pki / "ca.pem"))
    assert cli.main(["cluster", "list"]) == 3
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "SAMI_CA" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err or "certificate" in err.lower()
    assert admin not in err


def test_mtls_requires_a_client_certificate(
    serve: Callable[..., Server],
    pki: Path,
    other_pki: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv = tls_server(serve, pki, mtls=True)
    admin = srv.token("admin")
    offline.add_cluster(srv.data, "c1", ["stage"])
    ca = str(pki / "ca.pem")
    # No certificate: the handshake fails, the RPC never runs (not even to be refused).
    with SamiClient(Endpoint(addr=srv.addr, token=admin, ca_file=ca), call_timeout=5) as c:
        with pytest.raises(SamiError) as ei:
            c.list_clusters()
        assert ei.value.code is grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA: refused too.
    foreign = Endpoint(
        addr=srv.addr,
        token=admin,
        ca_file=ca,
        client_cert_file=str(other_pki / "client-ci.pem"),
        client_key_file=str(other_pki / "client-ci-key.pem"),
    )
    with SamiClient(foreign, call_timeout=5) as c:
        with pytest.raises(SamiError) as ei:
            c.list_clusters()
        assert ei.value.code is grpc.StatusCode.UNAVAILABLE
    # With our CA's client certificate, from the environment, as the CLI reads it.
    monkeypatch.setenv("SAMI_ADDR", srv.addr)
    monkeypatch.setenv("SAMI_TOKEN", admin)
    monkeypatch.setenv("SAMI_CA", ca)
    monkeypatch.setenv("SAMI_CLIENT_CERT", str(pki / "client-ci.pem"))
    monkeypatch.setenv("SAMI_CLIENT_KEY", str(pki / "client-ci-key.pem"))
    assert cli.main(["cluster", "list"]) == 0
    assert "c1" in capsys.readouterr().out
    assert cli.main(["token", "list"]) == 0
    # The same with flags, as `sami --help` lists them.
    monkeypatch.delenv("SAMI_CLIENT_CERT")
    monkeypatch.delenv("SAMI_CLIENT_KEY")
    assert cli.main(["cluster", "list"]) == 3  # no certificate now: the handshake fails
    capsys.readouterr()
    flags = ["--client-cert", str(pki / "client-ci.pem"), "--client-key"]
    assert cli.main(["cluster", "list", *flags, str(pki / "client-ci-key.pem")]) == 0
    assert "c1" in capsys.readouterr().out
    monkeypatch.setenv("SAMI_CLIENT_CERT", str(pki / "client-ci.pem"))
    monkeypatch.setenv("SAMI_CLIENT_KEY", str(pki / "client-ci-key.pem"))
    # The certificate is in addition to the token, not instead of it.
    monkeypatch.setenv("SAMI_TOKEN", "sami_000000000000_" + "x" * 43)
    assert cli.main(["cluster", "list"]) == 3
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def mtls_channel(srv: Server, pki: Path) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client-ci-key.pem").read_bytes(),
        certificate_chain=(pki / "client-ci.pem").read_bytes(),
    )
    return grpc.secure_channel(srv.addr, creds)


def wait_state(s: Stubs, admin: str, dep: str, want: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = s.dep.GetDeployment(
            deployment_pb2.GetDeploymentRequest(name=dep), metadata=md(admin), timeout=5
        ).state
        if state == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"deployment {dep} is {state}, not {want}")


def test_an_agent_with_its_certificate_connects_and_receives_work(
    serve: Callable[..., Server], pki: Path, tmp_path: Path
) -> None:
    srv = tls_server(serve, pki, mtls=True)
    admin = srv.token("admin")
    ch = mtls_channel(srv, pki)
    s, art = seed(srv, admin, ch)
    agent_token = srv.token("agent", cluster="c1")

    def agent(agent_id: str, *tls: str) -> Proc:
        return Proc(
            [
                PY,
                "-m",
                "sami_agent",
                "--control",
                srv.addr,
                "--agent-id",
                agent_id,
                "--dry-run",
                "--dry-run-step-seconds",
                "0.02",
                "--ca",
                str(pki / "ca.pem"),
                *tls,
            ],
            tmp_path / f"agent-{agent_id}.log",
            env=base_env(SAMI_TOKEN=agent_token),
        ).start()

    with ch:
        dep = create(s, admin, art)
        # Without a certificate the agent cannot even open its stream.
        bare = agent("bare")
        try:
            time.sleep(2.0)
            assert srv.call(lambda: srv.server.core.sessions.all()) == []
        finally:
            bare.kill()
        assert "control_plane_unreachable" in bare.log(), bare.log()
        a1 = agent(
            "a1",
            "--client-cert",
            str(pki / "agent-a1.pem"),
            "--client-key",
            str(pki / "agent-a1-key.pem"),
        )
        try:
            wait_state(s, admin, dep, deployment_pb2.SUCCEEDED)
        finally:
            a1.kill()
        assert '"tls": true' in a1.log() and '"client_certificate": true' in a1.log()


def test_non_loopback_needs_tls_or_insecure(tmp_path: Path, pki: Path) -> None:
    async def build(**kw: object) -> None:
        srv = ControlServer(ServeConfig(data_dir=tmp_path / "d", **kw))  # type: ignore[arg-type]
        srv.close()

    port = free_port()
    with pytest.raises(ListenRefused) as ei:
        asyncio.run(build(listen=f"0.0.0.0:{port}"))
    assert "without TLS" in str(ei.value) and "--tls-cert" in str(ei.value)
    asyncio.run(build(listen=f"0.0.0.0:{port}", insecure=True))
    asyncio.run(
        build(listen=f"0.0.0.0:{port}", tls_cert=pki / "server.pem", tls_key=pki / "server-key.pem")
    )
    with pytest.raises(ListenRefused, match="--tls-key"):
        asyncio.run(build(tls_cert=pki / "server.pem"))
    with pytest.raises(ListenRefused, match="needs TLS"):
        asyncio.run(build(client_ca=pki / "ca.pem"))
    # An address that is no HOST:PORT is named, not taken for a public one.
    with pytest.raises(ListenRefused, match="--listen: '7443' is not HOST:PORT"):
        asyncio.run(build(listen="7443"))
    with pytest.raises(ListenRefused, match="not a PEM"):
        asyncio.run(build(tls_cert=pki / "server.pem", tls_key=tmp_path / "d" / "sami.db"))


def test_sami_control_serve_with_mtls_end_to_end(pki: Path, tmp_path: Path) -> None:
    """The real commands: `sami-control serve --tls-cert --tls-key --client-ca`, then the
    `sami` CLI with SAMI_CA, SAMI_CLIENT_CERT and SAMI_CLIENT_KEY."""
    data = tmp_path / "data"
    offline.add_cluster(data, "c1", ["stage"])
    admin = offline.add_token(data, "admin", "root").plaintext
    port = free_port()
    addr = f"127.0.0.1:{port}"
    control = Proc(
        [
            PY,
            "-m",
            "sami_control",
            "serve",
            "--listen",
            addr,
            "--data",
            str(data),
            "--tls-cert",
            str(pki / "server.pem"),
            "--tls-key",
            str(pki / "server-key.pem"),
            "--client-ca",
            str(pki / "ca.pem"),
        ],
        tmp_path / "control.log",
    ).start()
    env = base_env(
        SAMI_ADDR=addr,
        SAMI_TOKEN=admin,
        SAMI_CA=str(pki / "ca.pem"),
        SAMI_CLIENT_CERT=str(pki / "client-ci.pem"),
        SAMI_CLIENT_KEY=str(pki / "client-ci-key.pem"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run(
                [PY, "-m", "sami_client", "cluster", "list"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stderr + control.log()
        assert "c1" in r.stdout
        assert '"tls": true' in control.log() and '"client_certificates": true' in control.log()
        bare = dict(env)
        del bare["SAMI_CLIENT_CERT"], bare["SAMI_CLIENT_KEY"]
        r = subprocess.run(
            [PY, "-m", "sami_client", "cluster", "list"],
            capture_output=True,
            text=True,
            env=bare,
            timeout=60,
        )
        assert r.returncode == 3 and "UNAVAILABLE" in r.stderr
    finally:
        control.kill()


def test_sami_control_refuses_a_public_address_without_tls(tmp_path: Path) -> None:
    r = subprocess.run(
        [PY, "-m", "sami_control", "serve", "--listen", f"0.0.0.0:{free_port()}", "--data",
         str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "without TLS" in r.stderr and "--tls-cert" in r.stderr

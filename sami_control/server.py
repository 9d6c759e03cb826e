"""Assemble and run the gRPC server: servicers, auth, health, reflection, TLS, limits,
graceful stop."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sami_common.listen import ListenError, is_loopback, require_tls_off_loopback
from sami_control.api.auth import AuthInterceptor
from sami_control.api.budget import MAX_LARGE_REQUEST
from sami_control.api.cron import CronServicer
from sami_control.api.locks import LockServicer
from sami_control.api.metrics_interceptor import MetricsInterceptor
from sami_control.api.notify import NotificationServicer
from sami_control.api.pb import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    cron_pb2,
    cron_pb2_grpc,
    deployment_pb2,
    lock_pb2,
    lock_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)
from sami_control.api.queries import QueryServicer
from sami_control.api.secrets import SecretServicer
from sami_control.api.servicers import (
    AgentServicer,
    ArtifactServicer,
    AuditServicer,
    ClusterServicer,
    DeploymentServicer,
    ManifestServicer,
    ServerServicer,
    TokenServicer,
    add_deployment_service,
)
from sami_control.api.status import StatusServicer
from sami_control.core.audit import Subject
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import DomainError
from sami_control.core.model import Principal
from sami_control.core.settings import Settings
from sami_control.core.store import StorageFailed
from sami_control.defaults import DEFAULT_LISTEN
from sami_control.notify_http import HttpTransport
from sami_control.storage import is_postgres, open_store
from sami_control.storage.maintenance import DataDirBusy, DataDirLock
from sami_control.storage.postgres_schema import SchemaTooNew
from sami_control.storage.sqlite import DataDirUnsafe, SQLiteStore
from sami_manifests import STACK_POLICIES

if TYPE_CHECKING:
    from sami_control.endpoints import HttpEndpoints
    from sami_control.metrics import ControlMetrics
    from sami_control.web.app import WebServer

log = structlog.get_logger("sami.control")

SERVICE_NAMES = [
    artifact_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    deployment_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
    cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    cron_pb2.DESCRIPTOR.services_by_name["CronService"].full_name,
    lock_pb2.DESCRIPTOR.services_by_name["LockService"].full_name,
    secret_pb2.DESCRIPTOR.services_by_name["SecretService"].full_name,
    notify_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
    manifest_pb2.DESCRIPTOR.services_by_name["ManifestService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    server_pb2.DESCRIPTOR.services_by_name["ServerService"].full_name,
]
# The largest message, either way: a manifests sync carries a whole deployments repo in one
# request. Only an authenticated caller's request is ever read, only a sync's may be this
# large, and the bytes of requests in flight are bounded per token and in all
# (api/budget.py); SECURITY.md discusses what this costs.
MAX_MESSAGE_BYTES = MAX_LARGE_REQUEST
# Request headers (metadata) of one call: a token is 256 characters at most; 16 KiB leaves
# room for proxies' headers and refuses anything bigger before any handler runs.
MAX_METADATA_BYTES = 16 * 1024
# HTTP/2 streams one connection may have open at once (an agent needs one, a CLI a few).
MAX_STREAMS_PER_CONNECTION = 100
# RPCs the server runs at once, over all connections; beyond it calls get
# RESOURCE_EXHAUSTED at once. Long-lived streams count too (each agent holds one, each
# watcher one), so this must sit well above the agents a control plane serves (thousands);
# what one token may open is bounded separately (--max-streams-per-token).
MAX_CONCURRENT_RPCS = 20_000
# First-generation threshold of the garbage collector in a serving process (see
# _settle_gc; Python's default is 700).
GC_THRESHOLD = 10_000
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    # The server's own pings find agents that vanished (their sessions end; their leases
    # run out on their own anyway). Agents ping every 20 s themselves (sami_common/dial.py),
    # so once a minute is enough here: with thousands of idle agents, pings are a good part
    # of the idle CPU. grpcio times a ping out after http2.ping_timeout_ms (default 60 s),
    # not keepalive_timeout_ms alone: both are set.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
    # Let agents keep idle streams alive with pings (they sit behind NAT).
    # Agents may set SAMI_KEEPALIVE_SECONDS as low as 1 s: accept their pings.
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class ListenRefused(Exception):
    pass


@dataclass
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path(".sami")
    settings: Settings | None = None
    insecure: bool = False
    grace: float = 10.0
    # TLS: the server's certificate chain and key (PEM). With client_ca, every client must
    # present a certificate signed by it (mTLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS
    # HOST:PORT of the Prometheus endpoint and of the webhook; "" serves neither
    # (docs/observability.md, docs/webhook.md).
    metrics_listen: str = ""
    webhook_listen: str = ""
    # HOST:PORT of the web dashboard (sami_control/web); "" serves none.
    ui_listen: str = ""
    # "strict": syncs refuse stack files that give a stack the host (SECURITY.md).
    stack_policy: str = "off"
    # --store / SAMI_STORE: a postgresql:// URL (replicas may share it); "" is SQLite in
    # data_dir (storage.open_store).
    store: str = ""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class _NoLock:
    """The data-folder lock of a server whose store is not in the data folder."""

    def release(self) -> None:
        return None


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ListenRefused(f"cannot read the {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ListenRefused(f"the {what} {path} is not a PEM file")
    return data


def server_credentials(cfg: ServeConfig) -> grpc.ServerCredentials:
    assert cfg.tls_cert is not None
    if cfg.tls_key is None:
        raise ListenRefused("--tls-cert needs --tls-key (the certificate's private key)")
    cert = _read_pem(cfg.tls_cert, "TLS certificate")
    key = _read_pem(cfg.tls_key, "TLS key")
    client_ca = _read_pem(cfg.client_ca, "client CA") if cfg.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class _NoEndpoints:
    """The HTTP side when neither metrics nor the webhook is served."""

    metrics_port = 0
    webhook_port = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class ControlServer:
    def __init__(self, cfg: ServeConfig) -> None:
        if cfg.client_ca is not None and not cfg.tls:
            raise ListenRefused("--client-ca needs TLS: pass --tls-cert and --tls-key too")
        if cfg.tls_key is not None and not cfg.tls:
            raise ListenRefused("--tls-key needs --tls-cert (the certificate it belongs to)")
        try:
            is_loopback(cfg.listen)
        except ListenError as exc:
            raise ListenRefused(f"--listen: {exc}") from None
        try:
            require_tls_off_loopback(cfg.listen, tls=cfg.tls, insecure=cfg.insecure)
        except ListenError as exc:
            raise ListenRefused(str(exc)) from None
        if cfg.stack_policy not in STACK_POLICIES:
            raise ListenRefused(
                f"unknown stack policy {cfg.stack_policy!r} (--stack-policy or "
                f"SAMI_STACK_POLICY): use {' or '.join(STACK_POLICIES)}"
            )
        self.cfg = cfg
        self._credentials = server_credentials(cfg) if cfg.tls else None
        try:
            # Two servers on one SQLite file would each think they own the leases. Replicas
            # on one PostgreSQL coordinate in it (Tx.lock): no folder of theirs to lock.
            self._data_lock: DataDirLock | _NoLock = (
                _NoLock() if is_postgres(cfg.store) else DataDirLock(cfg.data_dir)
            )
        except DataDirBusy as exc:
            raise ListenRefused(str(exc)) from None
        try:
            self.store = open_store(cfg.store, cfg.data_dir)
        except (DataDirUnsafe, ValueError) as exc:
            self._data_lock.release()
            raise ListenRefused(str(exc)) from None
        check = self.store.integrity_check() if isinstance(self.store, SQLiteStore) else "ok"
        if check != "ok":
            self._data_lock.release()
            raise RuntimeError(
                f"database {cfg.data_dir / SQLiteStore.FILE_NAME} failed its integrity check "
                f"({check}); restore "
                f"it from a backup: sami-control restore BACKUP --data {cfg.data_dir}"
            )
        settings = dataclasses.replace(cfg.settings or Settings(), stack_policy=cfg.stack_policy)
        self.core = ControlPlane(self.store, settings)
        self.notify_transport = HttpTransport(settings.notify_timeout)
        self.core.send_notifications(self.notify_transport)
        # Metrics and the webhook (which counts its requests in them) only when served:
        # otherwise nothing could read them, and neither prometheus_client nor the
        # per-call interceptor costs the server anything.
        self.metrics: ControlMetrics | None = None
        self.http: HttpEndpoints | _NoEndpoints = _NoEndpoints()
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if cfg.metrics_listen or cfg.webhook_listen:
            from sami_control.endpoints import HttpEndpoints
            from sami_control.metrics import ControlMetrics

            # A registry of this server's own: several servers can run in one process.
            self.metrics = ControlMetrics()
            self.metrics.attach(self.core)
            try:
                self.http = HttpEndpoints(
                    self.core,
                    self.metrics,
                    metrics_listen=cfg.metrics_listen,
                    webhook_listen=cfg.webhook_listen,
                    insecure=cfg.insecure,
                    tls_cert=cfg.tls_cert,
                    tls_key=cfg.tls_key,
                    client_ca=cfg.client_ca,
                )
            except ListenError as exc:
                self.close()
                raise ListenRefused(str(exc)) from None
            # Metrics first (outermost): it also counts the calls auth refuses.
            interceptors.append(MetricsInterceptor(self.metrics.rpc))
        self.web: WebServer | None = None
        if cfg.ui_listen:
            self.web = self._web_server(cfg)
        interceptors.append(
            AuthInterceptor(self.core.tokens.authenticate, audit_refusal=self._audit_refusal)
        )
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs or None,
        )
        artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(
            ArtifactServicer(self.core), self.server
        )
        add_deployment_service(DeploymentServicer(self.core), self.server)
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterServicer(self.core), self.server
        )
        cron_pb2_grpc.add_CronServiceServicer_to_server(CronServicer(self.core), self.server)
        lock_pb2_grpc.add_LockServiceServicer_to_server(LockServicer(self.core), self.server)
        secret_pb2_grpc.add_SecretServiceServicer_to_server(SecretServicer(self.core), self.server)
        notify_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationServicer(self.core), self.server
        )
        status_pb2_grpc.add_StatusServiceServicer_to_server(StatusServicer(self.core), self.server)
        manifest_pb2_grpc.add_ManifestServiceServicer_to_server(
            ManifestServicer(self.core), self.server
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(self.core), self.server)
        query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(self.core), self.server)
        admin_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(self.core), self.server)
        admin_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.core), self.server)
        server_pb2_grpc.add_ServerServiceServicer_to_server(ServerServicer(self.core), self.server)
        self.health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, self.server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    def _web_server(self, cfg: ServeConfig) -> WebServer:
        # Imported only when served: aiohttp and Jinja2 cost a server without the
        # dashboard nothing.
        from sami_control.web.app import WebServer
        from sami_control.webhook import ssl_context

        try:
            tls = None
            if cfg.tls_cert is not None:
                assert cfg.tls_key is not None  # checked above
                try:
                    tls = ssl_context(cfg.tls_cert, cfg.tls_key, cfg.client_ca)
                except (OSError, ValueError) as exc:
                    raise ListenError(f"the dashboard cannot use the TLS files: {exc}") from None
            return WebServer(self.core, cfg.ui_listen, insecure=cfg.insecure, tls=tls)
        except ListenError as exc:
            self.close()
            raise ListenRefused(f"--ui-listen: {exc}") from None

    async def _audit_refusal(
        self, who: Principal, action: str, target: str, exc: DomainError
    ) -> None:
        await self.core.audit.refused(Subject(who, target), action, exc)

    async def start(self) -> None:
        try:
            if self._credentials is not None:
                self.port = self.server.add_secure_port(self.cfg.listen, self._credentials)
            else:
                self.port = self.server.add_insecure_port(self.cfg.listen)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise ListenRefused(f"could not listen on {self.cfg.listen} (in use?)")
        try:
            await self.http.start()
            if self.web is not None:
                await self.web.start()
        except ListenError as exc:
            await self.http.stop()
            raise ListenRefused(str(exc)) from None
        try:
            await self.store.open()  # PostgreSQL: connect, migrate
        except (StorageFailed, SchemaTooNew) as exc:
            raise ListenRefused(str(exc)) from None
        if isinstance(self.store, SQLiteStore):
            # One fsync per turn of the event loop, not per change (storage/sqlite.py).
            self.store.group_commits()
        await self.core.start()
        await self.server.start()
        for name in ["", *SERVICE_NAMES]:
            await self.health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            listen=self.cfg.listen,
            port=self.port,
            store=self.store.kind,
            data=str(self.cfg.data_dir) if isinstance(self.store, SQLiteStore) else None,
            database=getattr(self.store, "target", None),
            tls=self.cfg.tls,
            client_certificates=self.cfg.client_ca is not None,
            metrics_port=self.http.metrics_port or None,
            webhook_port=self.http.webhook_port or None,
            ui_port=self.web.port if self.web else None,
            stack_policy=self.core.settings.stack_policy,
        )

    def close(self) -> None:
        """Release what the constructor took (the database, the data-folder lock) for a
        server that was built but never started."""
        if isinstance(self.store, SQLiteStore):
            self.store.close_now()
        # A PostgreSQL store connects in start(): nothing to release before.
        self._data_lock.release()

    async def stop(self) -> None:
        log.info("stopping", grace=self.cfg.grace)
        await self.health_servicer.enter_graceful_shutdown()
        if self.web is not None:
            await self.web.stop()
        await self.http.stop()
        await self.core.stop()
        await self.notify_transport.close()
        await self.server.stop(self.cfg.grace)
        await self.store.close()
        self._data_lock.release()

    async def run_until_signalled(self) -> None:
        await self.start()
        _settle_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()


def _settle_gc() -> None:
    """Tune the cyclic garbage collector of a serving process (not of one that embeds a
    ControlServer, like the tests): with a few thousand streams the process holds a few
    hundred thousand objects, and with the default thresholds a full collection walking
    all of them (30-80 ms with 1,000 watchers, more with 5,000 agents) ran every second or
    two while events were fanned out, stalling every stream.

    - What exists once serving started (modules, protobuf descriptors, the server) lives
      as long as the process: gc.freeze() takes it out of every later collection.
    - Serving allocates in bursts (a write per watcher) objects that mostly die by
      reference counting within milliseconds; a larger first generation lets them die
      before a collection promotes them, so far fewer reach the oldest generation and
      full collections become rare. Garbage in cycles (a few objects per call) waits a
      little longer to be freed: at most GC_THRESHOLD objects' worth."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)

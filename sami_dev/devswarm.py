"""A throwaway Docker engine, one-node swarm and registry, for tests and the demo.

Everything lives under one folder (`root`): the engine's data root, exec root, API socket
and pid file, the registry's config and storage, and logs. Nothing touches the machine's
own Docker (if any):

- `dockerd` runs in a **network namespace of its own** (`unshare --net`, loopback only).
  Without it, dockerd creates `docker0`/`docker_gwbridge` and iptables rules (FORWARD policy
  DROP) on the host, and two DevSwarms on one machine fight over the same bridge names.
  Inside its namespace the engine, its containers and the registry see only a private
  127.0.0.1, so no container can reach (or be reached from) anything else. The API socket
  is a unix socket in `root`, which works across namespaces.
- The swarm is initialised with `--advertise-addr 127.0.0.1` (listen address 127.0.0.1 too).
- `docker-registry` runs inside the same namespace (`nsenter --net=...`), on 127.0.0.1 and
  a free port, with filesystem storage under `root`. The engine reaches it as
  `127.0.0.1:PORT`; engines treat 127.0.0.0/8 registries as insecure (plain HTTP) by
  default, so no TLS and no daemon configuration are needed. From the host, reach the
  registry with `nsenter --net=/proc/<dockerd pid>/ns/net curl http://127.0.0.1:PORT/v2/`.

Needs root and the packages `scripts/install-engine.sh` installs (docker.io,
docker-registry, busybox-static).

Command line, for humans:

    python -m sami_dev.devswarm up ROOT       # start; prints the environment to export
    python -m sami_dev.devswarm image ROOT NAME TAG [PATH=CONTENT ...]   # build + push
    python -m sami_dev.devswarm down ROOT     # stop everything and remove ROOT
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import docker

BUSYBOX = Path("/bin/busybox")
# What dockerd starts under its exec root; the only programs stop() may kill by search.
ENGINE_HELPERS = frozenset(
    {"containerd", "containerd-shim", "containerd-shim-runc-v2", "runc", "docker-proxy", "dockerd"}
)
# Applets linked into /bin of every test image.
APPLETS = (
    "sh", "ash", "sleep", "echo", "httpd", "test", "[", "cat", "ls", "true", "false", "env",
    "ps", "kill", "mkdir", "rm", "touch", "date", "hostname", "printf", "pwd", "grep",
    "head", "tail", "wc", "id",
)  # fmt: skip
# Default command of the images: stays up, and exits at once on SIGTERM (a shell that is
# PID 1 ignores SIGTERM unless it traps it; without the trap every stop waits for the
# stop grace period and then SIGKILL).
DEFAULT_CMD = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done")
INSTALL_HINT = (
    "run scripts/install-engine.sh as root to install docker.io, docker-registry, busybox-static"
)


class DevSwarmError(RuntimeError):
    pass


def missing_requirements() -> list[str]:
    """What this machine lacks to run a DevSwarm (empty when it can)."""
    missing = [
        tool
        for tool in ("dockerd", "docker-registry", "unshare", "nsenter", "ip")
        if shutil.which(tool) is None
    ]
    if not BUSYBOX.is_file():
        missing.append(str(BUSYBOX))
    if os.geteuid() != 0:
        missing.append("root privileges")
    return missing


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _free_loopback_port() -> int:
    # The registry listens inside the engine's namespace, where nothing else listens but
    # the engine (2377, 7946); a port free on the host's loopback is free there too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(pid: int, port: int) -> bool:
    """Whether process `pid` (in whatever network namespace) listens on 127.0.0.1:port.

    /proc/PID/net/tcp shows the sockets of that process's network namespace.
    """
    want = f"0100007F:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":  # 0A = LISTEN
                    return True
    except (OSError, StopIteration):
        return False
    return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class DevSwarm:
    """A private engine + one-node swarm + registry under `root` (see the module doc)."""

    def __init__(self, root: Path | str, progress: Callable[[str], None] | None = None) -> None:
        self.root = Path(root).absolute()
        self._progress = progress or _stderr
        self._engine: subprocess.Popen[bytes] | None = None
        self._registry_proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._registry_port: int | None = None
        state = self._state_file
        if state.is_file():  # started by another process (`... devswarm up ROOT`)
            with contextlib.suppress(ValueError, OSError):
                self._registry_port = int(json.loads(state.read_text())["registry_port"])

    # -- where things are ------------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a Docker client (SDK or CLI) needs to reach this engine."""
        return {"DOCKER_HOST": self.docker_host}

    @property
    def registry(self) -> str:
        if self._registry_port is None:
            raise DevSwarmError("the registry is not running (start() first)")
        return f"127.0.0.1:{self._registry_port}"

    @property
    def _engine_pidfile(self) -> Path:
        return self.root / "docker.pid"

    @property
    def _registry_pidfile(self) -> Path:
        return self.root / "registry.pid"

    @property
    def _state_file(self) -> Path:
        return self.root / "devswarm.json"

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=60)
        return self._client

    # -- start -----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        missing = missing_requirements()
        if missing:
            raise DevSwarmError(
                f"cannot start a dev swarm, missing: {', '.join(missing)}; {INSTALL_HINT}"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start_engine(timeout)
            self._init_swarm()
            self._start_registry(timeout)
            self._state_file.write_text(
                json.dumps({"registry_port": self._registry_port, "docker_host": self.docker_host})
            )
        except BaseException:
            self.stop()
            raise

    def _start_engine(self, timeout: float) -> None:
        self._progress(f"devswarm: starting dockerd under {self.root} (own network namespace)")
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
        # `unshare --net` and `sh -c exec` keep one pid: Popen.pid is dockerd's pid.
        argv = [
            "unshare", "--net", "--",
            "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            "dockerd",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "-H", self.docker_host,
            "--pidfile", str(self._engine_pidfile),
            "--shutdown-timeout", "3",
        ]  # fmt: skip
        try:
            self._engine = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._engine.poll() is not None:
                raise DevSwarmError(
                    f"dockerd exited with status {self._engine.returncode}:\n"
                    f"{_tail(self.root / 'dockerd.log')}"
                )
            if self.socket_path.exists():
                try:
                    version = self.client().version()
                    break
                except docker.errors.DockerException:
                    pass
            if time.monotonic() > deadline:
                raise DevSwarmError(
                    f"dockerd did not answer within {timeout:.0f}s:\n"
                    f"{_tail(self.root / 'dockerd.log')}"
                )
            time.sleep(0.2)
        self._progress(
            f"devswarm: engine {version.get('Version')} answers (API {version.get('ApiVersion')})"
        )

    def _init_swarm(self) -> None:
        node_id = self.client().swarm.init(
            advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377", force_new_cluster=False
        )
        self._progress(f"devswarm: one-node swarm initialised (node {str(node_id)[:12]})")

    def _start_registry(self, timeout: float) -> None:
        assert self._engine is not None
        port = _free_loopback_port()
        reg = self.root / "registry"
        (reg / "data").mkdir(parents=True, exist_ok=True)
        config = reg / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {reg / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: devswarm-{port}\n"
        )
        log = open(reg / "registry.log", "ab")  # noqa: SIM115 - handed to the child
        argv = [
            "nsenter", f"--net=/proc/{self._engine.pid}/ns/net", "--",
            "docker-registry", "serve", str(config),
        ]  # fmt: skip
        try:
            self._registry_proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        self._registry_pidfile.write_text(str(self._registry_proc.pid))
        deadline = time.monotonic() + timeout
        while not _listening(self._registry_proc.pid, port):
            if self._registry_proc.poll() is not None:
                raise DevSwarmError(
                    f"docker-registry exited with status {self._registry_proc.returncode}:\n"
                    f"{_tail(reg / 'registry.log')}"
                )
            if time.monotonic() > deadline:
                raise DevSwarmError(f"docker-registry did not listen on 127.0.0.1:{port}")
            time.sleep(0.1)
        self._registry_port = port
        self._progress(f"devswarm: registry listens on 127.0.0.1:{port} (engine's namespace)")

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the registry and the engine (by their pids) and remove `root`.

        Safe to call more than once and after a start that failed midway.
        """
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self._stop_process(self._registry_proc, self._registry_pidfile, "docker-registry", 5.0)
        self._registry_proc = None
        engine_pid = self._stop_process(self._engine, self._engine_pidfile, "dockerd", 45.0)
        self._engine = None
        if engine_pid is not None:
            self._kill_leftovers()
        self._unmount_leftovers()
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
            if self.root.exists():
                self._progress(f"devswarm: could not remove {self.root} completely")
        self._registry_port = None

    def _stop_process(
        self,
        proc: subprocess.Popen[bytes] | None,
        pidfile: Path,
        what: str,
        grace: float,
    ) -> int | None:
        pid: int | None = proc.pid if proc is not None else None
        if pid is None:
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                return None
            # Only a process that belongs to this root (pid files outlive processes, and
            # pids are reused).
            if str(self.root) not in _cmdline(pid):
                return None
        if proc is not None and proc.poll() is not None:
            return pid
        if not _alive(pid):
            return pid
        self._progress(f"devswarm: stopping {what} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(proc, pid, grace):
            self._progress(f"devswarm: {what} (pid {pid}) ignored SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(proc, pid, 10.0)
        return pid

    @staticmethod
    def _wait_exit(proc: subprocess.Popen[bytes] | None, pid: int, timeout: float) -> bool:
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _kill_leftovers(self) -> None:
        """After dockerd is gone: the containerd and shims it started, if it could not stop
        them (shims daemonize, so they are not dockerd's children any more).

        Only engine programs (ENGINE_HELPERS) whose command line names this root: never a
        process that merely mentions the folder (a shell, a `timeout` wrapper, a test).
        """
        me = os.getpid()
        root = str(self.root)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            try:
                program = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            except OSError:
                continue
            if program in ENGINE_HELPERS and root in _cmdline(pid) and _alive(pid):
                self._progress(f"devswarm: killing leftover pid {pid}: {_cmdline(pid)[:80]}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _unmount_leftovers(self) -> None:
        root = str(self.root)
        try:
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
        except OSError:
            return
        mine = [p for p in points if p == root or p.startswith(root + "/")]
        for point in sorted(set(mine), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)

    # -- images ----------------------------------------------------------------------------
    def build_image(
        self,
        name: str,
        tag: str,
        files: Mapping[str, bytes | str] | None = None,
        cmd: Sequence[str] | None = None,
    ) -> tuple[str, str]:
        """Build a busybox image holding `files`, push it, return (REGISTRY/NAME@DIGEST, DIGEST).

        The root filesystem has /bin/busybox (static) with links for the usual applets, /tmp,
        and each of `files` (path inside the image -> content; a file whose content starts
        with "#!" is executable). Two images that differ by one file have different digests.
        """
        repo = f"{self.registry}/{name}"
        changes = [f"CMD {json.dumps(list(cmd or DEFAULT_CMD))}"]
        client = self.client()
        client.api.import_image_from_data(
            _rootfs_tar(files or {}), repository=repo, tag=tag, changes=changes
        )
        digest = ""
        for line in client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise DevSwarmError(f"push of {repo}:{tag} failed: {line['error']}")
            aux = line.get("aux") or {}
            digest = aux.get("Digest", digest)
        if not digest.startswith("sha256:"):
            raise DevSwarmError(f"push of {repo}:{tag} reported no digest")
        return f"{repo}@{digest}", digest

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> DevSwarm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _rootfs_tar(files: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    dirs_done: set[str] = set()

    def add_dir(tar: tarfile.TarFile, path: str, mode: int = 0o755) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in dirs_done:
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = mode if d == path else 0o755
                tar.addfile(info)
                dirs_done.add(d)

    def add_file(tar: tarfile.TarFile, path: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_dir(tar, "bin")
        add_dir(tar, "etc")
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        add_file(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", 0o644)
        add_file(tar, "etc/group", b"root:x:0:\n", 0o644)
        for raw_path, content in sorted(files.items()):
            path = raw_path.strip("/")
            if not path or ".." in path.split("/"):
                raise ValueError(f"bad path for an image file: {raw_path!r}")
            data = content.encode() if isinstance(content, str) else content
            if "/" in path:
                add_dir(tar, path.rsplit("/", 1)[0])
            add_file(tar, path, data, 0o755 if data.startswith(b"#!") else 0o644)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m sami_dev.devswarm up ROOT | down ROOT | "
        "image ROOT NAME TAG [PATH=CONTENT ...]"
    )
    if len(args) < 2 or args[0] not in ("up", "down", "image"):
        print(usage, file=sys.stderr)
        return 2
    command, root = args[0], Path(args[1])
    swarm = DevSwarm(root)
    if command == "up":
        try:
            swarm.start()
        except DevSwarmError as exc:
            print(f"devswarm: {exc}", file=sys.stderr)
            return 1
        print(f"export DOCKER_HOST={swarm.docker_host}")
        print(f"# registry (inside the engine's network namespace): {swarm.registry}")
        print(f"# stop with: python -m sami_dev.devswarm down {swarm.root}")
        return 0
    if command == "down":
        swarm.stop()
        return 0
    if len(args) < 4:
        print(usage, file=sys.stderr)
        return 2
    files: dict[str, bytes | str] = {}
    for spec in args[4:]:
        path, _, content = spec.partition("=")
        files[path] = content
    try:
        ref, _digest = swarm.build_image(args[2], args[3], files)
    except (DevSwarmError, docker.errors.DockerException) as exc:
        print(f"devswarm: {exc}", file=sys.stderr)
        return 1
    print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())

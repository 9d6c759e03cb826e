"""Pre-flight checks of the compose-format stack files a manifest names.

Nothing here re-implements `docker stack deploy`: it catches, before a deployment is
attempted, what would certainly fail (unparseable file, no such service, a config file the
agent will not receive) and warns about what is risky (privileged, the Docker socket,
capabilities, a rollout monitor window too short to see a failing health check).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import values
from .interpolation import required_in_tree
from .problems import Limits, Problem, error, warning
from .safeyaml import YList, YMap, load_yaml
from .schema import Located
from .words import did_you_mean

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# The stack policies (see stack_policy_problems).
POLICY_OFF = "off"
POLICY_STRICT = "strict"
STACK_POLICIES = (POLICY_OFF, POLICY_STRICT)
# Swarm's defaults when a compose file leaves them out.
DEFAULT_MONITOR = 5.0
DEFAULT_HC_INTERVAL = 30.0
DEFAULT_HC_RETRIES = 3
DEFAULT_HC_START_PERIOD = 0.0


@dataclass
class StackCheck:
    """The compose services found in the stack files, in order of first appearance."""

    services: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    parsed: bool = True  # False when a stack file could not be read at all
    # The `${NAME}`s the stack files need a value for (no default), in order of appearance.
    variables: list[str] = field(default_factory=list)


def check_stack_files(
    folder: str,
    stack_files: list[Located],
    files: Mapping[str, bytes],
    limits: Limits,
    cron: bool = False,
    policy: str = POLICY_OFF,
) -> StackCheck:
    """Parse and check each stack file; `folder` is the repo-relative environment folder.
    With `cron`, every service is checked as a cron job (a Swarm replicated job). With
    `policy` strict, what gives a stack the host is an error (stack_policy_problems)."""
    result = StackCheck()
    for stack in stack_files:
        path = f"{folder}/{stack.value}"
        doc, problems = load_yaml(path, files[stack.value], limits)
        result.problems.extend(problems)
        if doc is None:
            result.parsed = False
            continue
        _StackFile(path, stack.value, files.keys(), result, cron).check(doc)
        if policy == POLICY_STRICT:
            result.problems.extend(stack_policy_problems(path, doc))
        result.variables.extend(v for v in required_in_tree(doc) if v not in result.variables)
    return result


# --- the strict stack policy (SECURITY.md, "Stack policy") -----------------------------------
#
# Whoever may sync manifests decides what the stacks run, and a stack that mounts the Docker
# socket or the host's root, runs privileged, or joins the host's namespaces is root on every
# node it lands on. `sami-control serve --stack-policy strict` (and `sami manifests lint
# --stack-policy strict`) refuses those stack files; everything else is unchanged.

# A bind mount of one of these, or of anything beneath one, hands the container the host:
# its configuration (/etc: users, sudoers, cron), root's home, the kernel's interfaces and
# devices, the system's binaries, the container runtimes' state and sockets.
HOST_SYSTEM_PATHS = (
    "/etc",
    "/root",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/run/containerd",
    *DOCKER_SOCKETS,
)
# Capabilities that are as good as root on the host (mounting filesystems, loading kernel
# modules, raw devices, tracing host processes, reading any file by handle, eBPF). The ones
# Docker grants by default, and the network ones, are not refused.
HOST_CAPABILITIES = frozenset(
    {"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "DAC_READ_SEARCH", "BPF"}
)
# Service keys whose value `host` shares a host namespace with the container.
HOST_NAMESPACE_KEYS = ("pid", "ipc", "uts", "userns_mode", "cgroup", "network_mode")


def host_path_problem(source: str) -> str | None:
    """Why a bind mount of host path `source` gives the container the host, or None."""
    if "$" in source:
        return "is interpolated when the agent deploys, so it cannot be checked"
    if source.startswith("~"):
        return "is a home folder of the agent's host (root's, where the agent runs as root)"
    if not source.startswith("/"):
        if ".." in source.split("/"):
            return "climbs out of the release folder with '..'"
        return None
    parts = [seg for seg in source.split("/") if seg not in ("", ".")]
    if ".." in parts:
        return "has a '..' segment"
    normal = "/" + "/".join(parts)
    if normal == "/":
        return "is the host's root filesystem"
    if normal in DOCKER_SOCKETS:
        return "is the Docker socket: control of the whole node"
    for socket in DOCKER_SOCKETS:
        if socket.startswith(normal + "/"):
            return f"contains the Docker socket {socket}"
    for system in HOST_SYSTEM_PATHS:
        if normal == system or normal.startswith(system + "/"):
            return f"is {system}" if normal == system else f"is inside {system}"
    return None


def stack_policy_problems(path: str, doc: Any) -> list[Problem]:
    """What the strict stack policy refuses in one parsed stack file (`path`: its
    repo-relative path): an error per finding, naming the service and the line."""
    if not isinstance(doc, YMap):
        return []
    problems: list[Problem] = []

    def refuse(line: int, what: str, hint: str) -> None:
        problems.append(
            error(path, line, "stack-policy", f"{what} (refused by the strict stack policy)", hint)
        )

    services = doc.get("services")
    if isinstance(services, YMap):
        for name, spec in services.items():
            if isinstance(spec, YMap):
                _service_policy(str(name), spec, refuse)
    volumes = doc.get("volumes")
    if isinstance(volumes, YMap):
        for name, volume in volumes.items():
            opts = volume.get("driver_opts") if isinstance(volume, YMap) else None
            device = opts.get("device") if isinstance(opts, YMap) else None
            if not isinstance(opts, YMap) or not isinstance(device, str):
                continue
            problem = host_path_problem(device)
            if problem and "bind" in str(opts.get("o", "")).split(","):
                refuse(
                    opts.value_line("device"),
                    f"volume {name} binds host path {device!r}, which {problem}",
                    "use a plain named volume, or bind a folder made for this service",
                )
    networks = doc.get("networks")
    if isinstance(networks, YMap):
        for name, network in networks.items():
            if (
                isinstance(network, YMap)
                and network.get("external")
                and network.get("name") == "host"
            ):
                refuse(
                    networks.key_line(name),
                    f"network {name} is the host's network stack",
                    "use an overlay network and publish ports",
                )
    return problems


def _service_policy(name: str, spec: YMap, refuse: Callable[[int, str, str], None]) -> None:
    if spec.get("privileged") is True:
        refuse(
            spec.key_line("privileged"),
            f"service {name} runs privileged: root on the host",
            "remove privileged; grant only the capabilities it needs",
        )
    cap_add = spec.get("cap_add")
    if isinstance(cap_add, YList):
        for index, cap in enumerate(cap_add):
            normal = str(cap).upper().removeprefix("CAP_")
            if normal in HOST_CAPABILITIES:
                refuse(
                    cap_add.item_line(index),
                    f"service {name} adds capability {cap}, as good as root on the host",
                    "remove it; if the service truly needs it, it does not belong in a stack "
                    "that anyone who can sync manifests may change",
                )
    for key in HOST_NAMESPACE_KEYS:
        if spec.get(key) == "host":
            refuse(
                spec.value_line(key),
                f"service {name} shares the host's {key.removesuffix('_mode')} namespace "
                f"({key}: host)",
                f"remove {key}",
            )
    devices = spec.get("devices")
    if isinstance(devices, YList) and devices:
        refuse(
            spec.key_line("devices"),
            f"service {name} maps host devices into the container",
            "remove devices",
        )
    security_opt = spec.get("security_opt")
    if isinstance(security_opt, YList):
        for index, opt in enumerate(security_opt):
            if isinstance(opt, str) and ("unconfined" in opt or opt == "label:disable"):
                refuse(
                    security_opt.item_line(index),
                    f"service {name} turns off a confinement of the container ({opt})",
                    "remove it",
                )
    volumes = spec.get("volumes")
    if isinstance(volumes, YList):
        for index, volume in enumerate(volumes):
            source = _bind_source(volume)
            problem = host_path_problem(source) if source is not None else None
            if problem:
                refuse(
                    volumes.item_line(index),
                    f"service {name} mounts host path {source!r}, which {problem}",
                    "mount a named volume or a folder made for this service instead; "
                    "read_only does not make the Docker socket or the host safe",
                )


def _bind_source(volume: Any) -> str | None:
    """The host path of a service's bind mount, None for a named volume or tmpfs."""
    if isinstance(volume, str):
        if ":" not in volume:
            return None  # an anonymous volume: a path inside the container
        short = volume.split(":", 1)[0]
        return short if short.startswith(("/", ".", "~", "$")) else None
    if isinstance(volume, YMap):
        source = volume.get("source")
        if volume.get("type", "volume") == "bind" and isinstance(source, str):
            return source
    return None


def _fmt(seconds: float) -> str:
    return values.format_seconds(seconds)


class _StackFile:
    def __init__(
        self,
        path: str,
        relative: str,
        folder_files: Collection[str],
        result: StackCheck,
        cron: bool = False,
    ) -> None:
        self.cron = cron
        self.path = path
        self.relative = relative
        self.folder_files = folder_files
        self.result = result
        self.base_dir = relative.rsplit("/", 1)[0] if "/" in relative else ""

    def err(self, line: int, code: str, message: str, hint: str) -> None:
        self.result.problems.append(error(self.path, line, code, message, hint))

    def warn(self, line: int, code: str, message: str, hint: str) -> None:
        self.result.problems.append(warning(self.path, line, code, message, hint))

    def check(self, doc: Any) -> None:
        if not isinstance(doc, YMap):
            self.err(
                1,
                "not-a-mapping",
                "a compose file is a mapping with a `services:` section",
                "write the stack in compose format: services: {web: {image: ...}}",
            )
            self.result.parsed = False
            return
        services = doc.get("services")
        if not isinstance(services, YMap) or not services:
            self.err(
                doc.key_line("services") if "services" in doc else doc.line,
                "no-services",
                "the compose file defines no services",
                "add a `services:` mapping with at least one service",
            )
            self.result.parsed = False
            return
        for name, spec in services.items():
            line = services.key_line(name)
            if not isinstance(name, str):
                self.err(
                    line,
                    "wrong-type",
                    f"service name {name!r} is not a string",
                    f"quote it: '{name}'",
                )
                continue
            if name not in self.result.services:
                self.result.services.append(name)
            if not isinstance(spec, YMap):
                self.err(
                    services.value_line(name),
                    "wrong-type",
                    f"service {name} must be a mapping",
                    f"write {name}: {{image: ...}}",
                )
                continue
            self.check_service(name, spec)
        for section in ("configs", "secrets"):
            block = doc.get(section)
            if isinstance(block, YMap):
                for entry_name, entry in block.items():
                    if isinstance(entry, YMap) and "file" in entry:
                        self.check_file_ref(entry, "file", f"{section}.{entry_name}.file")

    def check_service(self, name: str, spec: YMap) -> None:
        if spec.get("privileged") is True:
            self.warn(
                spec.key_line("privileged"),
                "privileged",
                f"service {name} asks for privileged mode: full access to the host "
                "(and `docker stack deploy` ignores it on Swarm)",
                "remove privileged; grant only what is needed",
            )
        cap_add = spec.get("cap_add")
        if cap_add:
            caps = ", ".join(str(c) for c in cap_add) if isinstance(cap_add, list) else cap_add
            self.warn(
                spec.key_line("cap_add"),
                "cap-add",
                f"service {name} adds Linux capabilities ({caps})",
                "make sure each capability is needed; prefer none",
            )
        volumes = spec.get("volumes")
        if isinstance(volumes, YList):
            for index, volume in enumerate(volumes):
                if _is_docker_socket(volume):
                    self.warn(
                        volumes.item_line(index),
                        "docker-socket",
                        f"service {name} mounts the Docker socket: it controls the whole "
                        "swarm node (root on the host)",
                        "mount it only in trusted infrastructure services, read-only where "
                        "possible, and keep the service off public networks",
                    )
        env_file = spec.get("env_file")
        if isinstance(env_file, str):
            self.check_file_ref(spec, "env_file", f"services.{name}.env_file")
        elif isinstance(env_file, YList):
            for index, item in enumerate(env_file):
                if isinstance(item, str):
                    self.check_path(item, env_file.item_line(index), f"services.{name}.env_file")
                elif isinstance(item, YMap) and isinstance(item.get("path"), str):
                    self.check_file_ref(item, "path", f"services.{name}.env_file")
        if self.cron:
            self.check_cron_job(name, spec)
        else:
            self.check_monitor(name, spec)

    def check_cron_job(self, name: str, spec: YMap) -> None:
        """What the agent refuses or changes in a cron job's service (docs/cron.md)."""
        deploy = spec.get("deploy")
        if not isinstance(deploy, YMap):
            return
        mode = deploy.get("mode")
        if mode is not None and mode != "replicated-job":
            self.err(
                deploy.value_line("mode"),
                "cron-job-mode",
                f"service {name} is a cron job: it runs as a Swarm replicated job, not mode {mode}",
                "remove `mode:` (Sami sets mode: replicated-job)",
            )
        if "update_config" in deploy:
            self.err(
                deploy.key_line("update_config"),
                "cron-update-config",
                f"service {name} is a cron job: Swarm refuses an update_config on jobs",
                "remove deploy.update_config",
            )
        policy = deploy.get("restart_policy")
        condition = policy.get("condition") if isinstance(policy, YMap) else None
        if isinstance(policy, YMap) and condition not in (None, "none"):
            self.warn(
                policy.value_line("condition"),
                "cron-restart-policy",
                f"service {name} is a cron job: its restart_policy condition {condition} is "
                "replaced by none (a run is one attempt)",
                "remove it: a failed run is tried again at the next scheduled time",
            )

    def check_file_ref(self, mapping: YMap, key: str, what: str) -> None:
        value = mapping[key]
        if isinstance(value, str):
            self.check_path(value, mapping.value_line(key), what)

    def check_path(self, value: str, line: int, what: str) -> None:
        """A file a stack file reads must travel with it: inside the environment folder."""
        if value.startswith("/"):
            self.warn(
                line,
                "absolute-path",
                f"{what} {value!r} is read from the agent's host, not from the repo",
                "put the file in the environment folder and name it relatively, unless the "
                "host really provides it",
            )
            return
        if "${" in value or value.startswith("~"):
            return  # interpolated by the deploying host; nothing to check here
        joined = f"{self.base_dir}/{value}" if self.base_dir else value
        parts: list[str] = []
        for seg in joined.split("/"):
            if seg in ("", "."):
                continue
            if seg == "..":
                if not parts:
                    self.err(
                        line,
                        "path-escapes",
                        f"{what} {value!r} points outside the environment folder: the agent "
                        "receives only that folder",
                        "copy the file into the environment folder and name it relatively",
                    )
                    return
                parts.pop()
            else:
                parts.append(seg)
        resolved = "/".join(parts)
        if resolved not in self.folder_files:
            self.err(
                line,
                "missing-file",
                f"{what} {value!r} does not exist in the environment folder"
                + did_you_mean(resolved, self.folder_files),
                f"add {resolved} next to {self.relative} or fix the path",
            )

    def check_monitor(self, name: str, spec: YMap) -> None:
        hc = spec.get("healthcheck")
        if not isinstance(hc, YMap) or hc.get("disable") is True:
            return
        test = hc.get("test")
        if isinstance(test, list) and test and test[0] == "NONE":
            return
        try:
            interval = _duration(hc.get("interval"), DEFAULT_HC_INTERVAL)
            start = _duration(hc.get("start_period"), DEFAULT_HC_START_PERIOD)
            deploy = spec.get("deploy")
            update = deploy.get("update_config") if isinstance(deploy, YMap) else None
            monitor_raw = update.get("monitor") if isinstance(update, YMap) else None
            monitor = _duration(monitor_raw, DEFAULT_MONITOR)
        except ValueError:
            return  # docker stack deploy reports unreadable durations itself
        retries = hc.get("retries", DEFAULT_HC_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            return
        window = interval * retries + start
        if monitor >= window:
            return
        if monitor_raw is None:
            line = (
                update.line
                if isinstance(update, YMap)
                else (deploy.line if isinstance(deploy, YMap) else spec.key_line("healthcheck"))
            )
            what = f"deploy.update_config.monitor is not set (Swarm uses {_fmt(monitor)})"
        else:
            assert isinstance(update, YMap)
            line = update.value_line("monitor")
            what = f"deploy.update_config.monitor is {_fmt(monitor)}"
        self.warn(
            line,
            "monitor-window",
            f"service {name}: {what}, shorter than its health check can take to fail "
            f"({_fmt(interval)} x {retries} + start_period {_fmt(start)} = {_fmt(window)}): "
            "Swarm may call the rollout done before a failing task is seen",
            f"set deploy.update_config.monitor to at least {_fmt(window)}",
        )


def _duration(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, str):
        return values.parse_go_duration(value)
    raise ValueError(value)


def _is_docker_socket(volume: Any) -> bool:
    if isinstance(volume, str):
        source = volume.split(":", 1)[0]
    elif isinstance(volume, YMap):
        source = volume.get("source", "")
    else:
        return False
    return isinstance(source, str) and source.rstrip("/") in DOCKER_SOCKETS

"""Pre-flight checks of the compose-format stack files a manifest names.

Nothing here re-implements `docker stack deploy`: it catches, before a deployment is
attempted, what would certainly fail (unparseable file, no such service, a config file the
agent will not receive) and warns about what is risky (privileged, the Docker socket,
capabilities, a rollout monitor window too short to see a failing health check).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import values
from .problems import Limits, Problem, error, warning
from .safeyaml import YList, YMap, load_yaml
from .schema import Located, did_you_mean

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
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


def check_stack_files(
    folder: str,
    stack_files: list[Located],
    files: Mapping[str, bytes],
    limits: Limits,
    cron: bool = False,
) -> StackCheck:
    """Parse and check each stack file; `folder` is the repo-relative environment folder.
    With `cron`, every service is checked as a cron job (a Swarm replicated job)."""
    result = StackCheck()
    for stack in stack_files:
        path = f"{folder}/{stack.value}"
        doc, problems = load_yaml(path, files[stack.value], limits)
        result.problems.extend(problems)
        if doc is None:
            result.parsed = False
            continue
        _StackFile(path, stack.value, files.keys(), result, cron).check(doc)
    return result


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

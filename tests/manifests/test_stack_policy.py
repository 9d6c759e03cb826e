"""The strict stack policy: what it refuses in a stack file (and what it lets through),
each refusal naming the file, the service and the line; and `lint` applying it on demand."""

from __future__ import annotations

import pytest
from manifest_fixtures import WEB, WEB_STACK

from sami_manifests import DEFAULT_LIMITS, Problem, lint, stack_policy_problems
from sami_manifests.safeyaml import load_yaml
from sami_manifests.stacks import host_path_problem

PATH = "services/tools/swarm/production/stack.yml"


def check(text: str) -> list[Problem]:
    doc, problems = load_yaml(PATH, text.encode(), DEFAULT_LIMITS)
    assert not problems and doc is not None
    return stack_policy_problems(PATH, doc)


def service(body: str) -> str:
    """A stack with one service `tool`; `body` is its fields, indented by four spaces."""
    return "services:\n  tool:\n    image: busybox\n" + body


REFUSED_MOUNTS = [
    "/:/host",
    "//:/host",
    "/./:/host",
    "/var/run/docker.sock:/var/run/docker.sock",
    "/var/run/docker.sock:/var/run/docker.sock:ro",
    "/run/docker.sock:/sock",
    "/var/run:/hostrun",
    "/run:/hostrun",
    "/var:/hostvar",
    "/var/run/:/hostrun",
    "/etc:/hostetc",
    "/etc/cron.d:/cron",
    "/root/.ssh:/keys",
    "/proc:/hostproc",
    "/sys/fs/cgroup:/cg",
    "/dev:/dev",
    "/usr/bin:/bin2",
    "/var/lib/docker:/docker",
    "/run/containerd/containerd.sock:/c.sock",
    "/srv/../etc:/x",
    "~/.docker:/config",
    "${HOST_ROOT}:/host",
    "$HOME:/home",
    "../../../../:/host",
]
ALLOWED_MOUNTS = [
    "data:/data",
    "/data",
    "/srv/www:/srv/www",
    "/var/log/app:/logs:ro",
    "/opt/tool:/opt/tool",
    "./conf:/etc/tool",
    "conf/nginx.conf:/etc/nginx/nginx.conf",
]


@pytest.mark.parametrize("mount", REFUSED_MOUNTS)
def test_host_mounts_are_refused(mount: str) -> None:
    (problem,) = check(service(f"    volumes:\n      - {mount!r}\n"))
    assert problem.is_error and problem.code == "stack-policy"
    assert (problem.file, problem.line) == (PATH, 5)
    assert "service tool mounts host path" in problem.message
    assert "strict stack policy" in problem.message and problem.hint


@pytest.mark.parametrize("mount", ALLOWED_MOUNTS)
def test_ordinary_mounts_are_allowed(mount: str) -> None:
    assert check(service(f"    volumes:\n      - {mount!r}\n")) == []


def test_the_long_volume_syntax_is_checked_by_type() -> None:
    problems = check(
        service(
            "    volumes:\n"
            "      - type: volume\n"
            "        source: docker\n"
            "        target: /var/run/docker.sock\n"
            "      - type: bind\n"
            "        source: /var/run/docker.sock\n"
            "        target: /var/run/docker.sock\n"
            "        read_only: true\n"
        )
    )
    assert [(p.line, "docker socket" in p.message.lower()) for p in problems] == [(8, True)]


@pytest.mark.parametrize(
    ("body", "line", "says"),
    [
        ("    privileged: true\n", 4, "runs privileged"),
        ("    cap_add: [ALL]\n", 4, "capability ALL"),
        ("    cap_add:\n      - NET_ADMIN\n      - SYS_ADMIN\n", 6, "capability SYS_ADMIN"),
        ("    cap_add: [CAP_SYS_ADMIN]\n", 4, "capability CAP_SYS_ADMIN"),
        ("    cap_add: [sys_module]\n", 4, "capability sys_module"),
        ("    cap_add: [SYS_PTRACE]\n", 4, "capability SYS_PTRACE"),
        ("    pid: host\n", 4, "host's pid namespace"),
        ("    ipc: host\n", 4, "host's ipc namespace"),
        ("    network_mode: host\n", 4, "host's network namespace"),
        ("    userns_mode: host\n", 4, "host's userns namespace"),
        ("    devices:\n      - /dev/sda:/dev/sda\n", 4, "maps host devices"),
        ("    security_opt:\n      - seccomp:unconfined\n", 5, "seccomp:unconfined"),
        ("    security_opt: ['apparmor=unconfined']\n", 4, "apparmor=unconfined"),
    ],
)
def test_host_privileges_are_refused(body: str, line: int, says: str) -> None:
    (problem,) = check(service(body))
    assert problem.line == line, problem.format()
    assert problem.message.startswith("service tool ") and says in problem.message


@pytest.mark.parametrize(
    "body",
    [
        "    privileged: false\n",
        "    cap_add: [NET_ADMIN, CHOWN, NET_BIND_SERVICE]\n",
        "    pid: service:other\n",
        "    network_mode: bridge\n",
        "    security_opt: [no-new-privileges:true]\n",
        "    read_only: true\n",
    ],
)
def test_what_does_not_give_the_host_is_allowed(body: str) -> None:
    assert check(service(body)) == []


def test_a_named_volume_that_binds_the_host_root_is_refused() -> None:
    text = (
        service("    volumes: [hostroot:/host]\n")
        + "volumes:\n  hostroot:\n    driver: local\n    driver_opts:\n"
        + "      type: none\n      o: bind\n      device: /\n"
    )
    (problem,) = check(text)
    assert (problem.line, "volume hostroot binds host path '/'") == (
        11,
        problem.message.split(",")[0],
    ), problem.format()


def test_the_host_network_as_an_external_network_is_refused() -> None:
    text = service("    networks: [hostnet]\n") + (
        "networks:\n  hostnet:\n    external: true\n    name: host\n"
    )
    (problem,) = check(text)
    assert problem.line == 6 and "network hostnet is the host's network" in problem.message


def test_every_finding_of_a_file_is_reported() -> None:
    problems = check(
        service("    privileged: true\n    pid: host\n    volumes: ['/:/host']\n")
        + "  other:\n    image: busybox\n    cap_add: [ALL]\n"
    )
    assert [(p.line, p.message.split(" ")[1]) for p in problems] == [
        (4, "tool"),
        (5, "tool"),
        (6, "tool"),
        (9, "other"),
    ]


def test_host_path_problem_says_why() -> None:
    assert host_path_problem("/") == "is the host's root filesystem"
    assert host_path_problem("/run/docker.sock/") == (
        "is the Docker socket: control of the whole node"
    )
    assert host_path_problem("/var/run") == "contains the Docker socket /var/run/docker.sock"
    assert host_path_problem("/etc/passwd") == "is inside /etc"
    assert host_path_problem("/srv/app") is None


def test_lint_applies_the_policy_only_when_asked(files: dict[str, bytes]) -> None:
    files[f"{WEB}/web-stack.yml"] = WEB_STACK.replace(
        "    image: ghcr.io/example/web:latest\n",
        "    image: ghcr.io/example/web:latest\n    privileged: true\n"
        "    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n",
    ).encode()
    off = lint(files)
    assert not [p for p in off if p.is_error]
    assert {p.code for p in off} >= {"privileged", "docker-socket"}  # warnings only
    strict = [p for p in lint(files, stack_policy="strict") if p.code == "stack-policy"]
    assert [(p.file, p.line) for p in strict] == [
        (f"{WEB}/web-stack.yml", 4),
        (f"{WEB}/web-stack.yml", 5),
    ]
    with pytest.raises(ValueError, match="unknown stack policy 'lax'"):
        lint(files, stack_policy="lax")

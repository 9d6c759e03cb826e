"""Each kind of layout, schema and YAML error is caught, with its file and line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from manifest_fixtures import (
    BILLION_LAUGHS,
    JOBS,
    JOBS_MANIFEST,
    SITE,
    WEB,
    WEB_MANIFEST,
    WEB_STACK,
    base_files,
)

from sami_manifests import Limits, Problem, Severity, lint

Files = dict[str, bytes]


def replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def web_manifest(line: int, new: str) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        files[f"{WEB}/sami.yaml"] = replace_line(WEB_MANIFEST, line, new).encode()

    return change


def set_file(path: str, text: str | bytes) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        files[path] = text.encode() if isinstance(text, str) else text

    return change


def move(old_prefix: str, new_prefix: str) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        for path in [p for p in files if p.startswith(old_prefix + "/")]:
            files[new_prefix + path[len(old_prefix) :]] = files.pop(path)

    return change


def chain(*changes: Callable[[Files], None]) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        for one in changes:
            one(files)

    return change


def delete(path: str) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        del files[path]

    return change


SITE_LINES = base_files()[f"{SITE}/sami.yaml"].decode().splitlines(keepends=True)


@dataclass
class Case:
    id: str
    change: Callable[[Files], object]
    code: str
    file: str
    line: int
    says: tuple[str, ...] = field(default=())


CASES = [
    Case(
        "unknown field with did-you-mean",
        web_manifest(4, "stack_file:"),
        "unknown-field",
        f"{WEB}/sami.yaml",
        4,
        ("unknown field 'stack_file'", "did you mean 'stack_files'?"),
    ),
    Case(
        "type does not match its folder",
        web_manifest(3, "type: compose"),
        "type-mismatch",
        f"{WEB}/sami.yaml",
        3,
        ("type compose does not match its folder services/web/swarm/",),
    ),
    Case(
        "unknown type value",
        web_manifest(3, "type: swam"),
        "unknown-type",
        f"{WEB}/sami.yaml",
        3,
        ("did you mean 'swarm'?",),
    ),
    Case(
        "service name does not match its folder",
        web_manifest(2, "service_name: webapp"),
        "service-name-mismatch",
        f"{WEB}/sami.yaml",
        2,
        ("'webapp' does not match its folder services/web/",),
    ),
    Case(
        "missing sami.yaml",
        delete(f"{WEB}/sami.yaml"),
        "missing-manifest",
        f"{WEB}/",
        0,
        ("no sami.yaml",),
    ),
    Case(
        "misnamed sami.yaml",
        lambda f: f.__setitem__(f"{WEB}/Sami.yaml", f.pop(f"{WEB}/sami.yaml")),
        "missing-manifest",
        f"{WEB}/",
        0,
        ("did you mean 'Sami.yaml'?",),
    ),
    Case(
        "both sami.yaml and sami.yml",
        set_file(f"{WEB}/sami.yml", WEB_MANIFEST),
        "two-manifests",
        f"{WEB}/",
        0,
        ("both sami.yaml and sami.yml",),
    ),
    Case(
        "sami.yaml in the type folder",
        set_file("services/web/swarm/sami.yaml", WEB_MANIFEST),
        "misplaced-manifest",
        "services/web/swarm/sami.yaml",
        0,
        ("must sit in an environment folder, not in services/web/swarm/",),
    ),
    Case(
        "unknown environment folder",
        move(WEB, "services/web/swarm/staging"),
        "unknown-environment-folder",
        "services/web/swarm/staging/",
        0,
        ("did you mean 'stage'?",),
    ),
    Case(
        "unknown deployment type folder",
        move(WEB, "services/web/swam/stage"),
        "unknown-type-folder",
        "services/web/swam/",
        0,
        ("did you mean 'swarm'?",),
    ),
    Case(
        "invalid service folder name",
        move(WEB, "services/Web_App/swarm/stage"),
        "bad-service-folder",
        "services/Web_App/",
        0,
        ("not a valid service name",),
    ),
    Case(
        "prod and production side by side",
        move(SITE, "services/site/static_file/prod"),
        "environment-alias",
        "services/site/static_file/prod/",
        0,
        ("read as environment production",),
    ),
    Case(
        "stack file path escaping the folder",
        web_manifest(5, "  - ../../compose/stage/web-stack.yml"),
        "path-escapes",
        f"{WEB}/sami.yaml",
        5,
        ("goes up with '..'",),
    ),
    Case(
        "stack file path with a right-to-left override",
        web_manifest(5, '  - "web\\u202e-stack.yml"'),
        "unsafe-path",
        f"{WEB}/sami.yaml",
        5,
        ("U+202E",),
    ),
    Case(
        "stack file path with a line separator",
        web_manifest(5, '  - "web\\u2028-stack.yml"'),
        "unsafe-path",
        f"{WEB}/sami.yaml",
        5,
        ("U+2028",),
    ),
    Case(
        "absolute stack file path",
        web_manifest(5, "  - /etc/web-stack.yml"),
        "absolute-path",
        f"{WEB}/sami.yaml",
        5,
        ("is absolute",),
    ),
    Case(
        "missing stack file",
        web_manifest(5, "  - web-stak.yml"),
        "missing-file",
        f"{WEB}/sami.yaml",
        5,
        ("web-stak.yml does not exist", "did you mean 'web-stack.yml'?"),
    ),
    Case(
        "stack_files given as a string",
        web_manifest(4, "stack_files: web-stack.yml"),
        "wrong-type",
        f"{WEB}/sami.yaml",
        4,
        ("must be a list of paths",),
    ),
    Case(
        "unknown image service",
        web_manifest(7, "  - wbe"),
        "unknown-image-service",
        f"{WEB}/sami.yaml",
        7,
        ("'wbe' is not a service of the stack files", "did you mean 'web'?"),
    ),
    Case(
        "image_services left out with two services",
        lambda f: f.__setitem__(
            f"{WEB}/sami.yaml",
            WEB_MANIFEST.replace("image_services:\n  - web\n", "").encode(),
        ),
        "missing-image-services",
        f"{WEB}/sami.yaml",
        4,
        ("image_services is required", "(web, redis)"),
    ),
    Case(
        "bad cron schedule",
        set_file(f"{JOBS}/sami.yaml", JOBS_MANIFEST.replace("*/15 * * * *", "61 * * * *")),
        "bad-cron",
        f"{JOBS}/sami.yaml",
        5,
        ("minute: 61 is outside 0-59",),
    ),
    Case(
        "cron schedule with 6 fields",
        set_file(f"{JOBS}/sami.yaml", JOBS_MANIFEST.replace("*/15 * * * *", "0 */15 * * * *")),
        "bad-cron",
        f"{JOBS}/sami.yaml",
        5,
        ("5 fields",),
    ),
    Case(
        "stack_files at the top of a cron manifest",
        set_file(f"{JOBS}/sami.yaml", JOBS_MANIFEST + "stack_files: [job.yml]\n"),
        "field-not-for-type",
        f"{JOBS}/sami.yaml",
        7,
        ("'stack_files' is not used by type cron",),
    ),
    Case(
        "bad duration",
        web_manifest(8, "converge_timeout: 5 minutes"),
        "bad-duration",
        f"{WEB}/sami.yaml",
        8,
        ("'5 minutes' is not a duration", "e.g. 90, 90s, 15m, 1h30m"),
    ),
    Case(
        "duration not in whole seconds",
        web_manifest(8, 'converge_timeout: "90.5s"'),
        "bad-duration",
        f"{WEB}/sami.yaml",
        8,
        ("not a whole number of seconds",),
    ),
    Case(
        "duration too short",
        web_manifest(8, "converge_timeout: 5s"),
        "bad-duration",
        f"{WEB}/sami.yaml",
        8,
        ("outside 10s..2h",),
    ),
    Case(
        "duration too long",
        web_manifest(8, "converge_timeout: 3h"),
        "bad-duration",
        f"{WEB}/sami.yaml",
        8,
        ("outside 10s..2h",),
    ),
    Case(
        "bad version",
        web_manifest(1, "version: v1"),
        "bad-version",
        f"{WEB}/sami.yaml",
        1,
        ("unsupported version 'v1'",),
    ),
    Case(
        "version missing",
        web_manifest(1, "# no version"),
        "missing-field",
        f"{WEB}/sami.yaml",
        2,
        ("missing field 'version'",),
    ),
    Case(
        "pr_deploy not a boolean",
        web_manifest(9, "pr_deploy: sometimes"),
        "wrong-type",
        f"{WEB}/sami.yaml",
        9,
        ("pr_deploy must be true or false",),
    ),
    Case(
        "invalid stack_name",
        web_manifest(9, "stack_name: Web Stack"),
        "wrong-value",
        f"{WEB}/sami.yaml",
        9,
        ("not a valid Swarm stack name",),
    ),
    Case(
        "duplicate key",
        web_manifest(9, "type: swarm"),
        "duplicate-key",
        f"{WEB}/sami.yaml",
        9,
        ("duplicate key 'type' (first at line 3)",),
    ),
    Case(
        "non-mapping top level",
        set_file(f"{WEB}/sami.yaml", "- version: v1beta\n- service_name: web\n"),
        "not-a-mapping",
        f"{WEB}/sami.yaml",
        1,
        ("a manifest is a mapping of fields, got a list",),
    ),
    Case(
        "YAML syntax error",
        web_manifest(6, "image_services: [web"),
        "yaml-syntax",
        f"{WEB}/sami.yaml",
        8,
        ("invalid YAML: while parsing a flow sequence (line 6): did not find expected",),
    ),
    Case(
        "billion laughs",
        set_file(f"{WEB}/sami.yaml", BILLION_LAUGHS),
        "yaml-size",
        f"{WEB}/sami.yaml",
        7,
        ("billion laughs",),
    ),
    Case(
        "deep nesting (flow)",
        set_file(f"{WEB}/sami.yaml", "version: " + "[" * 5000 + "]" * 5000 + "\n"),
        "yaml-depth",
        f"{WEB}/sami.yaml",
        1,
        ("nested deeper than 64 levels",),
    ),
    Case(
        "deep nesting (block)",
        set_file(
            f"{WEB}/sami.yaml",
            "version: v1beta\n"
            + "".join(f"{'  ' * i}k{i}:\n" for i in range(100))
            + "  " * 100
            + "x\n",
        ),
        "yaml-depth",
        f"{WEB}/sami.yaml",
        65,
        ("nested deeper than 64 levels",),
    ),
    Case(
        "python object tag",
        web_manifest(9, "cluster: !!python/object/apply:os.system ['touch /tmp/sami-pwned']"),
        "yaml-tag",
        f"{WEB}/sami.yaml",
        9,
        ("tag !!python/object/apply:os.system is not allowed",),
    ),
    Case(
        "custom tag in a stack file",
        set_file(f"{WEB}/web-stack.yml", WEB_STACK.replace("image: redis", "image: !reset redis")),
        "yaml-tag",
        f"{WEB}/web-stack.yml",
        15,
        ("tag !reset is not allowed",),
    ),
    Case(
        "oversized sami.yaml",
        set_file(f"{WEB}/sami.yaml", WEB_MANIFEST + "#" * (300 * 1024) + "\n"),
        "file-too-large",
        f"{WEB}/sami.yaml",
        0,
        ("more than the 262144 allowed",),
    ),
    Case(
        "not UTF-8",
        set_file(f"{WEB}/sami.yaml", WEB_MANIFEST.encode() + b"cluster: \xff\n"),
        "encoding",
        f"{WEB}/sami.yaml",
        10,
        ("not valid UTF-8",),
    ),
    Case(
        "stack file that does not parse",
        set_file(f"{WEB}/web-stack.yml", "services:\n  web: [\n"),
        "yaml-syntax",
        f"{WEB}/web-stack.yml",
        3,
        ("invalid YAML",),
    ),
    Case(
        "stack file without services",
        set_file(f"{WEB}/web-stack.yml", "version: '3.8'\nnetworks: {}\n"),
        "no-services",
        f"{WEB}/web-stack.yml",
        1,
        ("defines no services",),
    ),
    Case(
        "config file outside the environment folder",
        set_file(f"{WEB}/web-stack.yml", WEB_STACK.replace("./conf/web.conf", "../../conf.d/x")),
        "path-escapes",
        f"{WEB}/web-stack.yml",
        18,
        ("points outside the environment folder",),
    ),
    Case(
        "config file missing",
        set_file(f"{WEB}/web-stack.yml", WEB_STACK.replace("./conf/web.conf", "conf/web.cnf")),
        "missing-file",
        f"{WEB}/web-stack.yml",
        18,
        ("does not exist in the environment folder",),
    ),
    Case(
        "static_file target_dir relative",
        set_file(f"{SITE}/sami.yaml", "".join(SITE_LINES[:4]) + "  target_dir: srv/www\n"),
        "wrong-value",
        f"{SITE}/sami.yaml",
        5,
        ("must be an absolute path",),
    ),
    Case(
        "static_file block missing",
        set_file(f"{SITE}/sami.yaml", "".join(SITE_LINES[:3])),
        "missing-field",
        f"{SITE}/sami.yaml",
        1,
        ("missing field 'static_file'",),
    ),
    Case(
        "unknown field inside static_file",
        set_file(f"{SITE}/sami.yaml", "".join(SITE_LINES) + "  keep_release: 3\n"),
        "unknown-field",
        f"{SITE}/sami.yaml",
        6,
        ("did you mean 'keep_releases'?",),
    ),
    Case(
        "stack_name in a pull_request manifest",
        chain(
            move(WEB, "services/web/swarm/pull_request"),
            set_file(
                "services/web/swarm/pull_request/sami.yaml",
                replace_line(WEB_MANIFEST, 9, "pr_deploy: true\nstack_name: previews"),
            ),
        ),
        "field-not-for-env",
        "services/web/swarm/pull_request/sami.yaml",
        10,
        ("stack_name cannot be set for pull_request",),
    ),
    Case(
        "no services folder",
        lambda f: [f.pop(p) for p in list(f) if p.startswith("services/")],
        "no-services-folder",
        "services/",
        0,
        ("no services/ folder",),
    ),
    *(
        Case(
            f"U+{ord(ch):04X} in an uploaded path",
            set_file(f"{WEB}/conf/web{ch}.conf", "x"),
            "bad-path",
            f"{WEB}/conf/web{ch}.conf",
            0,
            (f"U+{ord(ch):04X}",),
        )
        for ch in "\u2028\u2029\u202a\u202e\u2066\u2069\u200e\u200f"
    ),
    Case(
        "bad path in an uploaded revision",
        set_file("services/web/../../etc/passwd", "x"),
        "bad-path",
        "services/web/../../etc/passwd",
        0,
        ("'..'",),
    ),
]


def find(problems: list[Problem], code: str) -> list[Problem]:
    return [p for p in problems if p.code == code]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_is_reported_with_file_and_line(files: Files, case: Case) -> None:
    case.change(files)
    problems = lint(files)
    matching = find(problems, case.code)
    assert matching, f"no {case.code} in:\n" + "\n".join(p.format() for p in problems)
    problem = matching[0]
    assert (problem.file, problem.line) == (case.file, case.line), problem.format()
    for text in case.says:
        assert text in problem.message, problem.format()
    assert problem.hint, "every problem says what to do"
    if case.code != "environment-alias":
        assert problem.severity is Severity.ERROR
        assert any(p.is_error for p in problems)


def test_prod_and_production_side_by_side_is_an_error(files: Files) -> None:
    files["services/site/static_file/prod/sami.yaml"] = files[f"{SITE}/sami.yaml"]
    problems = find(lint(files), "duplicate-environment")
    assert {p.file for p in problems} == {
        "services/site/static_file/prod/",
        "services/site/static_file/production/",
    }
    assert all(p.is_error for p in problems)


def test_empty_manifest(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = b"# nothing yet\n"
    (problem,) = find(lint(files), "empty-file")
    assert problem.file == f"{WEB}/sami.yaml"


def test_k8s_is_accepted_but_reported_unsupported(files: Files) -> None:
    files["services/api/k8s/stage/sami.yaml"] = b"version: v1beta\nservice_name: api\ntype: k8s\n"
    problems = lint(files)
    (problem,) = find(problems, "type-not-supported")
    assert problem.severity is Severity.WARNING
    assert (problem.file, problem.line) == ("services/api/k8s/stage/sami.yaml", 3)
    assert "not yet supported" in problem.message
    assert "Kubernetes executor" in problem.hint
    assert not any(p.is_error for p in problems)


def test_fields_of_another_type_are_rejected(files: Files) -> None:
    files[f"{SITE}/sami.yaml"] += b"stack_files: [x.yml]\ncron:\n  schedule: '@daily'\n"
    problems = find(lint(files), "field-not-for-type")
    assert [(p.line, p.message) for p in problems] == [
        (6, "field 'stack_files' is not used by type static_file"),
        (7, "field 'cron' is not used by type static_file"),
    ]


def test_revision_limits(files: Files) -> None:
    small = Limits(max_files=3)
    (problem,) = lint(files, small)
    assert problem.code == "too-many-files"
    problems = lint(files, Limits(max_total_bytes=100))
    assert find(problems, "revision-too-large")
    problems = lint(files, Limits(max_env_folder_bytes=200))
    assert {p.file for p in find(problems, "folder-too-large")} == {f"{WEB}/"}


def test_stray_files_in_the_layout_are_warned(files: Files) -> None:
    files["services/notes.txt"] = b"x"
    files["services/web/swarm/TODO"] = b"x"
    files["services/web/README.md"] = b"ignored silently"
    files["services/web/swarm/.gitkeep"] = b""
    problems = lint(files)
    stray = find(problems, "stray-file")
    assert {p.file for p in stray} == {"services/notes.txt", "services/web/swarm/TODO"}
    assert all(p.severity is Severity.WARNING for p in stray)
    assert not any(p.is_error for p in problems)


def test_same_environment_under_two_types_is_warned(files: Files) -> None:
    for path in [p for p in files if p.startswith(WEB + "/")]:
        files[path.replace("/swarm/", "/compose/")] = files[path].replace(
            b"type: swarm", b"type: compose"
        )
    problems = lint(files)
    (problem,) = find(problems, "ambiguous-type")
    assert problem.file == "services/web/"
    assert "compose, swarm" in problem.message
    assert not any(p.is_error for p in problems)


def test_pr_deploy_warnings(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] += b"pr_deploy: true\n"
    move(JOBS, "services/jobs/cron/pull_request")(files)
    problems = lint(files)
    (ignored,) = find(problems, "pr-deploy-ignored")
    assert (ignored.file, ignored.line) == (f"{WEB}/sami.yaml", 10)
    (off,) = find(problems, "pr-deploy-off")
    assert off.file == "services/jobs/cron/pull_request/sami.yaml"
    assert not any(p.is_error for p in problems)


def test_problems_are_sorted_and_formatted(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = replace_line(WEB_MANIFEST, 4, "stack_file:").encode()
    problems = lint(files)
    assert problems == sorted(problems, key=lambda p: (p.file, p.line, not p.is_error, p.code))
    line = find(problems, "unknown-field")[0].format("repo")
    assert line.startswith(f"repo/{WEB}/sami.yaml:4: error: unknown field 'stack_file'")
    assert " — rename it to stack_files" in line


def test_two_manifests_with_one_stack_name_are_refused(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = (WEB_MANIFEST + "stack_name: shared\n").encode()
    files[f"{JOBS}/sami.yaml"] = (JOBS_MANIFEST + "stack_name: shared\n").encode()
    (problem,) = find(lint(files), "duplicate-stack-name")
    assert problem.is_error
    # The later manifest (by folder) is the one reported, on its stack_name line.
    assert (problem.file, problem.line) == (f"{WEB}/sami.yaml", 10), problem.format()
    assert f"also the stack of {JOBS}/sami.yaml" in problem.message


def test_a_stack_name_that_is_another_manifests_default_is_refused(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = (WEB_MANIFEST + "stack_name: production_jobs\n").encode()
    (problem,) = find(lint(files), "duplicate-stack-name")
    assert "'production_jobs'" in problem.message


def test_one_stack_name_on_two_pinned_clusters_is_fine(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = (WEB_MANIFEST + "stack_name: shared\n").encode()
    files[f"{JOBS}/sami.yaml"] = (JOBS_MANIFEST + "stack_name: shared\ncluster: other\n").encode()
    assert not find(lint(files), "duplicate-stack-name")
    assert not [p for p in lint(files) if p.is_error]

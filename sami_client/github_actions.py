"""What `sami` does differently when it runs as a GitHub Actions step: collapsible log
groups, error annotations, step outputs, and provenance taken from the run's variables.

See https://docs.github.com/actions/reference/workflow-commands-for-github-actions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

from sami_client.pb import artifact_pb2


def enabled(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def command_stream(out: TextIO, err: TextIO, *, json_output: bool) -> TextIO:
    """Where to write workflow commands: stdout, unless it carries JSON that they would break
    (the runner reads commands from stderr too)."""
    return err if json_output else out


def _escape_data(text: str) -> str:
    # A workflow command is one line; the runner decodes these escapes.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


@contextmanager
def group(stream: TextIO, title: str) -> Iterator[None]:
    """Fold the lines printed inside into one collapsible section of the job log."""
    print(f"::group::{_escape_data(title)}", file=stream, flush=True)
    try:
        yield
    finally:
        print("::endgroup::", file=stream, flush=True)


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error(
    stream: TextIO, message: str, title: str = "sami", *, file: str = "", line: int = 0
) -> None:
    """An annotation on the run summary, so a failed deployment is visible without the log;
    with `file` (relative to the workspace) and `line` it is also shown on that line."""
    props = []
    if file:
        props.append(f"file={_escape_property(file)}")
        if line > 0:
            props.append(f"line={line}")
    props.append(f"title={_escape_property(title)}")
    print(f"::error {','.join(props)}::{_escape_data(message)}", file=stream, flush=True)


def write_outputs(env: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    """Append `key=value` lines to $GITHUB_OUTPUT, so later steps can read
    `steps.<id>.outputs.<key>`."""
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return
    lines = []
    for key, value in outputs.items():
        if "\n" in value or "\r" in value:
            # Ids and digests never contain newlines; refuse rather than corrupt the file.
            raise ValueError(f"output {key} must be a single line")
        lines.append(f"{key}={value}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)


def default_provenance(env: Mapping[str, str]) -> artifact_pb2.Provenance:
    """Where the artifact came from, from the variables every Actions run sets."""
    server = env.get("GITHUB_SERVER_URL", "").rstrip("/")
    repository = env.get("GITHUB_REPOSITORY", "")
    run_id = env.get("GITHUB_RUN_ID", "")
    provenance = artifact_pb2.Provenance(git_commit=env.get("GITHUB_SHA", ""))
    if server and repository:
        provenance.git_repo = f"{server}/{repository}"
        if run_id:
            provenance.ci_run_url = f"{server}/{repository}/actions/runs/{run_id}"
    return provenance


def write_summary(env: Mapping[str, str], markdown: str) -> None:
    """Append a markdown block to $GITHUB_STEP_SUMMARY, shown on the run's summary page."""
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(markdown.rstrip("\n") + "\n\n")

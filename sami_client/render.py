"""How the CLI shows things: progress lines, tables, detail blocks, JSON, and errors that say
what to do next. Pure formatting (strings in, strings out) plus `Console`, the only writer."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import descriptor, json_format, message, timestamp_pb2

from sami_client.errors import QueueTimeout, SamiError, WatchTimeout
from sami_client.pb import artifact_pb2, cluster_pb2, deployment_pb2, manifest_pb2
from sami_common.durations import format_seconds

# Wide enough for IN_PROGRESS and ROLLED_BACK, so messages line up in the CI log.
_STATE_WIDTH = 11


# Enum values are named one way in text and in JSON: without the enum's prefix
# (`ARTIFACT_KIND_IMAGE` is `image`), in lower case for the enums whose flags take lower case
# (`--kind image`, `--role deployer`), else in capitals (`SUCCEEDED`, as the logs shout it).
_LOWER_CASE_ENUMS = frozenset(
    {"sami.v1.ArtifactKind", "sami.v1.TokenRole", "sami.v1.DeploymentAction"}
)


def enum_name(enum: descriptor.EnumDescriptor, number: int) -> str:
    """How the CLI names value `number` of `enum` (its number, when this client does not know
    it: a newer server's)."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    name = value.name.removeprefix(prefix)
    return name.lower() if enum.full_name in _LOWER_CASE_ENUMS else name


def state_name(state: deployment_pb2.DeploymentState) -> str:
    return enum_name(deployment_pb2.DeploymentState.DESCRIPTOR, state)


def kind_name(kind: artifact_pb2.ArtifactKind) -> str:
    return enum_name(artifact_pb2.ArtifactKind.DESCRIPTOR, kind)


def _local(ts: timestamp_pb2.Timestamp) -> datetime.datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=datetime.UTC).astimezone()


def clock(ts: timestamp_pb2.Timestamp) -> str:
    when = _local(ts) or datetime.datetime.now().astimezone()
    return when.strftime("%H:%M:%S")


def timestamp(ts: timestamp_pb2.Timestamp) -> str:
    when = _local(ts)
    return when.isoformat(timespec="seconds") if when else "-"


def to_dict(msg: message.Message) -> dict[str, Any]:
    # Field names as in the .proto (what the docs and grpcurl show), every field present so a
    # script need not know proto3 defaults; int64 values are strings, as ProtoJSON says; enum
    # values named as the text output names them (`enum_name`).
    data = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _rename_enums(msg.DESCRIPTOR, data)
    return data


def _rename_enums(message_type: Any, data: dict[str, Any]) -> None:
    """Replace, in `data` (MessageToDict of a `message_type`), every enum value's ProtoJSON
    name by its `enum_name`."""
    for field in message_type.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.enum_type is not None:
            data[field.name] = _renamed(field.enum_type, value)
        elif field.message_type is not None and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            entry = field.message_type
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                for key, item in value.items():
                    if value_field.enum_type is not None:
                        value[key] = _renamed(value_field.enum_type, item)
                    elif value_field.message_type is not None:
                        _rename_enums(value_field.message_type, item)
            else:
                for item in value if isinstance(value, list) else [value]:
                    _rename_enums(entry, item)


def _renamed(enum: descriptor.EnumDescriptor, value: Any) -> Any:
    if isinstance(value, list):
        return [_renamed(enum, v) for v in value]
    known = enum.values_by_name.get(value) if isinstance(value, str) else None
    return enum_name(enum, known.number) if known is not None else value


def to_json(value: Any) -> str:
    if isinstance(value, message.Message):
        value = to_dict(value)
    return json.dumps(value, sort_keys=True)


# Deployments


def target(d: deployment_pb2.Deployment) -> str:
    """`web -> stage`, or `web -> pull_request #12`."""
    where = d.environment
    if d.pull_request:
        where += f" #{d.pull_request}"
    return f"{d.service} -> {where}"


def action_name(d: deployment_pb2.Deployment) -> str:
    """`deploy` or `teardown` (deployments stored before actions existed are deploys)."""
    action = d.action or deployment_pb2.DEPLOY
    return enum_name(deployment_pb2.DeploymentAction.DESCRIPTOR, action)


def what(d: deployment_pb2.Deployment) -> str:
    """`web -> stage`, or for a preview teardown `teardown of pr-12_web` (the stack's name
    says which service and pull request)."""
    if d.action != deployment_pb2.TEARDOWN:
        return target(d)
    if d.stack_name:
        return f"teardown of {d.stack_name}"
    return f"teardown of the {d.service} preview of pull request #{d.pull_request}"


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab`: the algorithm and 12 hex digits, as docker shows image ids."""
    algorithm, sep, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}" if sep else digest[:12]


def artifact_label(d: deployment_pb2.Deployment) -> str:
    """`web@sha256:0123456789ab`, or `-` when the deployment has no artifact (the teardown
    of a preview Sami had no record of)."""
    a = d.artifact
    if not a.digest:
        return a.artifact_name or "-"
    return f"{a.artifact_name}@{short_digest(a.digest)}" if a.artifact_name else a.digest


def event_line(e: deployment_pb2.DeploymentEvent) -> str:
    """`12:01:03  #4  IN_PROGRESS  converge  web 1/2 running (new)`"""
    parts = [clock(e.time), f"#{e.sequence}", state_name(e.state).ljust(_STATE_WIDTH)]
    if e.phase:
        parts.append(e.phase)
    if e.message:
        parts.append(e.message)
    return "  ".join(parts).rstrip()


def watch_header(d: deployment_pb2.Deployment) -> str:
    if d.action == deployment_pb2.TEARDOWN:
        line = f"deployment {d.id}: {what(d)}, {state_name(d.state)}"
    else:
        artifact = d.artifact.ref or d.artifact.digest or "?"
        line = f"deployment {d.id}: {target(d)}, artifact {artifact}, {state_name(d.state)}"
    if d.cluster:
        line += f" on cluster {d.cluster}"
    return line


def reconnect_line(
    addr: str, deployment_id: str, err: SamiError | None, delay: float, next_addr: str = ""
) -> str:
    """`next_addr`: the replica the watch resumes on, when it is not `addr`."""
    if err is None:
        what = f"sami-control at {addr} ended the event stream early"
    else:
        what = f"no connection to sami-control at {addr} ({err.code.name}: {err.message})"
    where = f" at {next_addr}" if next_addr and next_addr != addr else ""
    return f"sami: {what}; resuming the watch of deployment {deployment_id}{where} in {delay:.1f}s"


def outcome_line(d: deployment_pb2.Deployment) -> str:
    line = f"{state_name(d.state)}: deployment {d.id} ({what(d)})"
    return f"{line}: {d.status_message}" if d.status_message else line


def deployment_detail(d: deployment_pb2.Deployment) -> str:
    rows = [
        ("deployment", d.id),
        ("service", d.service),
        (
            "environment",
            d.environment + (f" (pull request #{d.pull_request})" if d.pull_request else ""),
        ),
        ("action", action_name(d)),
        ("state", state_name(d.state) + (" (cancel requested)" if d.cancel_requested else "")),
        ("status", d.status_message),
        ("artifact", f"{d.artifact.artifact_name} {d.artifact.ref}".strip()),
        ("digest", d.artifact.digest),
        ("type", d.deployment_type),
        ("stack", d.stack_name),
        # The versions and values it recorded (`sami secret`, `sami var`): never a secret's value.
        ("secrets", ", ".join(f"{s.name} v{s.version}" for s in d.secrets)),
        ("variables", ", ".join(f"{k}={v}" for k, v in sorted(d.variables.items()))),
        ("cluster", d.cluster),
        ("agent", d.agent_id + (f" (attempt {d.attempt})" if d.attempt else "")),
        ("reason", d.reason),
        ("request id", d.request_id),
        ("created", _when_by(d.create_time, d.created_by)),
        ("updated", timestamp(d.update_time)),
        ("finished", timestamp(d.finish_time)),
        ("events", str(d.last_sequence)),
    ]
    return _detail(rows)


def deployments_table(deployments: Sequence[deployment_pb2.Deployment]) -> str:
    return table(
        ("ID", "STATE", "SERVICE", "ENVIRONMENT", "ARTIFACT", "CREATED"),
        [
            (
                d.id,
                state_name(d.state),
                d.service,
                d.environment + (f" #{d.pull_request}" if d.pull_request else ""),
                f"({what(d)})"
                if d.action == deployment_pb2.TEARDOWN
                else d.artifact.ref or d.artifact.digest,
                timestamp(d.create_time),
            )
            for d in deployments
        ],
    )


def history_table(
    deployments: Sequence[deployment_pb2.Deployment],
    live: Collection[str] = (),
    *,
    pull_requests: bool = False,
) -> str:
    """`sami history`: one line per deployment, newest first; `*` marks the ids in `live`.
    `pull_requests`: add a PR column (a pull_request history that mixes previews)."""
    header = ["", "ID", "STATE", "ACTION", "ARTIFACT", "CREATED", "BY", "REASON / STATUS"]
    if pull_requests:
        header.insert(2, "PR")
    rows = []
    for d in deployments:
        row = [
            "*" if d.id in live else "",
            d.id,
            state_name(d.state),
            action_name(d),
            artifact_label(d),
            timestamp(d.create_time),
            d.created_by,
            _reason_status(d),
        ]
        if pull_requests:
            row.insert(2, f"#{d.pull_request}")
        rows.append(row)
    return table(header, rows)


def _reason_status(d: deployment_pb2.Deployment) -> str:
    """The reason; for a deployment that did not succeed, also why it ended that way."""
    parts = [d.reason] if d.reason else []
    if d.status_message and d.state != deployment_pb2.SUCCEEDED:
        parts.append(f"[{d.status_message}]" if parts else d.status_message)
    return " ".join(parts) or "-"


_OUTCOME_MARK = {
    deployment_pb2.SUCCEEDED: "✅",
    deployment_pb2.FAILED: "❌",
    deployment_pb2.ROLLED_BACK: "↩️",
    deployment_pb2.CANCELLED: "⏹️",
    deployment_pb2.SUPERSEDED: "⏭️",
}


def step_summary(d: deployment_pb2.Deployment, outcome: str = "") -> str:
    """The markdown block `sami` adds to a GitHub Actions run's summary about deployment `d`:
    what went where, how it ended (`outcome` overrides it, e.g. for a wait that timed out),
    how long it took, and links to the commit and the run that built the artifact."""
    cell = _markdown_cell
    if not outcome:
        mark = _OUTCOME_MARK.get(d.state, "⏳")
        outcome = f"{mark} {state_name(d.state)}"
        if d.status_message:
            outcome += f": {d.status_message}"
    environment = d.environment + (f" (pull request #{d.pull_request})" if d.pull_request else "")
    rows = [
        ("service", f"`{cell(d.service)}`"),
        ("environment", cell(environment)),
        ("action", action_name(d)),
        (
            "artifact",
            f"`{cell(d.artifact.ref or d.artifact.artifact_name)}`"
            if d.artifact.ref or d.artifact.artifact_name
            else "",
        ),
        ("digest", f"`{cell(d.artifact.digest)}`" if d.artifact.digest else ""),
        ("outcome", cell(outcome)),
        ("deployment", f"`{cell(d.id)}` (`sami get {cell(d.id)}`)"),
        ("cluster", cell(d.cluster)),
        ("duration", _took(d)),
        ("commit", _commit_link(d.artifact.provenance)),
        (
            "built by",
            f"[CI run]({d.artifact.provenance.ci_run_url})"
            if _is_url(d.artifact.provenance.ci_run_url)
            else "",
        ),
    ]
    lines = [f"### Sami: {cell(what(d))}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows if value]
    return "\n".join(lines) + "\n"


def _markdown_cell(text: str) -> str:
    # One line, `|` escaped: a value cannot break the table.
    return " ".join(text.split()).replace("|", "\\|")


def _took(d: deployment_pb2.Deployment) -> str:
    if not d.HasField("create_time") or not d.HasField("finish_time"):
        return ""
    seconds = d.finish_time.ToSeconds() - d.create_time.ToSeconds()
    return format_seconds(seconds) if seconds > 0 else "0s"


def _is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def _commit_link(p: artifact_pb2.Provenance) -> str:
    if not p.git_commit:
        return ""
    short_sha = _markdown_cell(p.git_commit[:12])
    if _is_url(p.git_repo):
        return f"[{short_sha}]({p.git_repo.rstrip('/')}/commit/{p.git_commit})"
    return f"`{short_sha}`"


# Artifacts, clusters, agents


def artifact_detail(a: artifact_pb2.Artifact) -> str:
    return _detail(
        [
            ("artifact", a.id),
            ("name", a.artifact_name),
            ("kind", kind_name(a.kind)),
            ("ref", a.ref),
            ("digest", a.digest),
            ("tags", ", ".join(a.tags)),
            ("git repo", a.provenance.git_repo),
            ("git commit", a.provenance.git_commit),
            ("ci run", a.provenance.ci_run_url),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))),
            ("created", _when_by(a.create_time, a.created_by)),
        ]
    )


def artifacts_table(artifacts: Sequence[artifact_pb2.Artifact]) -> str:
    return table(
        ("ID", "NAME", "KIND", "TAGS", "REF", "CREATED"),
        [
            (
                a.id,
                a.artifact_name,
                kind_name(a.kind),
                ",".join(a.tags),
                a.ref,
                timestamp(a.create_time),
            )
            for a in artifacts
        ],
    )


def clusters_table(clusters: Sequence[cluster_pb2.Cluster]) -> str:
    return table(
        ("CLUSTER", "ENVIRONMENTS", "CREATED"),
        [(c.cluster_id, ",".join(c.environments), timestamp(c.create_time)) for c in clusters],
    )


def agents_table(agents: Sequence[cluster_pb2.Agent]) -> str:
    return table(
        ("AGENT", "CLUSTER", "CONNECTED", "VERSION", "CAPABILITIES", "LAST HEARTBEAT", "LEASES"),
        [
            (
                a.agent_id,
                a.cluster,
                "yes" if a.connected else "no",
                a.version,
                ",".join(a.capabilities),
                timestamp(a.last_heartbeat_time),
                ",".join(a.leases),
            )
            for a in agents
        ],
    )


# Manifest revisions


def short(ident: str) -> str:
    """The first 12 characters of a revision id or commit, as git shows them."""
    return ident[:12]


def manifest_problem_line(p: manifest_pb2.ManifestProblem, root: str = "") -> str:
    """`file:line: severity: message — hint`, as `sami manifests lint` prints problems."""
    path = f"{root.rstrip('/')}/{p.file}" if root else p.file
    where = f"{path}:{p.line}" if p.line > 0 else path
    text = f"{where}: {p.severity or 'warning'}: {p.message}"
    return f"{text} — {p.hint}" if p.hint else text


def manifest_revisions_table(revisions: Sequence[manifest_pb2.ManifestRevision]) -> str:
    return table(
        ("ID", "COMMIT", "ENTRIES", "FILES", "CREATED", "BY", "CURRENT"),
        [
            (
                short(r.id),
                short(r.commit) or "-",
                str(len(r.entries)),
                str(r.file_count),
                timestamp(r.create_time),
                r.created_by,
                "*" if r.current else "",
            )
            for r in revisions
        ],
    )


def manifest_revision_detail(r: manifest_pb2.ManifestRevision, *, files: bool = False) -> str:
    """The revision, its entries (one folder each), its warnings and, with `files`, every
    file's path and size."""
    head = _detail(
        [
            ("revision", r.id),
            ("commit", r.commit),
            ("current", "yes" if r.current else "no"),
            ("created", _when_by(r.create_time, r.created_by)),
            ("files", str(r.file_count)),
            ("manifests", str(len(r.entries))),
        ]
    )
    sections = [head, "", manifest_entries_table(r.entries)]
    if r.warnings:
        sections += ["", f"warnings ({len(r.warnings)}):"]
        sections += [f"  {manifest_problem_line(w)}" for w in r.warnings]
    if files:
        sections += ["", manifest_files_table(r.files)]
    return "\n".join(sections)


def manifest_entries_table(entries: Sequence[manifest_pb2.ManifestEntry]) -> str:
    return table(
        ("SERVICE", "TYPE", "ENVIRONMENT", "STACK FILES", "IMAGE SERVICES", "TIMEOUT", "EXTRA"),
        [
            (
                e.service,
                e.deployment_type,
                e.environment,
                ",".join(e.stack_files) or "-",
                ",".join(e.image_services) or "-",
                f"{e.converge_timeout_seconds}s" if e.converge_timeout_seconds else "-",
                _entry_extra(e),
            )
            for e in entries
        ],
    )


def _entry_extra(e: manifest_pb2.ManifestEntry) -> str:
    extra = []
    if e.pr_deploy:
        extra.append("pr_deploy")
    if e.stack_name:
        extra.append(f"stack={e.stack_name}")
    if e.cluster:
        extra.append(f"cluster={e.cluster}")
    if e.static_target_dir:
        extra.append(f"target_dir={e.static_target_dir} keep={e.keep_releases}")
    if e.cron_schedule:
        extra.append(f"schedule={e.cron_schedule!r}")
    if e.promote_after_seconds:
        extra.append(f"promote_after={format_seconds(e.promote_after_seconds)}")
    if e.queue and e.queue != "supersede":
        extra.append(f"queue={e.queue}")
    return " ".join(extra)


def manifest_files_table(files: Sequence[manifest_pb2.ManifestFile]) -> str:
    rows = [(f.path, str(f.size), f.sha256[:12]) for f in sorted(files, key=lambda f: f.path)]
    total = sum(f.size for f in files)
    return table(("FILE", "BYTES", "SHA256"), rows) + f"\n{len(rows)} files, {total} bytes"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _when_by(ts: timestamp_pb2.Timestamp, who: str) -> str:
    return f"{timestamp(ts)} by {who}" if who else timestamp(ts)


def _detail(rows: Sequence[tuple[str, str]]) -> str:
    shown = [(k, v) for k, v in rows if v and v != "-"]
    width = max(len(k) for k, _ in shown)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in shown)


# Errors: what is wrong, then what to do next.


def error_lines(err: SamiError, addr: str, token_set: bool) -> list[str]:
    lines = [f"{err.code.name}: {err.message}"]
    lines += [f"  {field}: {description}" for field, description in err.field_violations]
    lines += [f"  {detail}" for detail in err.details]
    advice = _advice(err, addr, token_set)
    if advice:
        lines.append(advice)
    return lines


def _advice(err: SamiError, addr: str, token_set: bool) -> str:
    code = err.code
    if isinstance(err, QueueTimeout):
        return ""  # Its message says why it waited and what to do.
    if isinstance(err, WatchTimeout):
        unreachable = (
            f"is sami-control running at {addr}? set SAMI_ADDR if it moved. "
            if err.last_error is not None
            else ""
        )
        return (
            f"{unreachable}the deployment goes on without this client: follow it with "
            f"`sami watch {err.deployment}`, stop it with `sami cancel {err.deployment}`, "
            "or wait longer with --timeout DURATION (e.g. 1h)"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"is sami-control running at {addr}? set SAMI_ADDR (or --addr) to its host:port; "
            "if it serves TLS, set SAMI_CA to the CA certificate file"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if not token_set:
            return (
                "SAMI_TOKEN is not set: set it to a token "
                "(create one with `sami-control token create ...`)"
            )
        # The server says which it is (the token id is not secret): name it the same way.
        if "has expired" in err.message:
            why = "this one has expired"
        elif "was revoked" in err.message:
            why = "this one was revoked"
        else:
            why = "this one is unknown, malformed or not the secret of its id"
        return (
            f"set SAMI_TOKEN to a valid token: {why} "
            "(an admin creates one with `sami-control token create ...`)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return (
            "the token in SAMI_TOKEN may not do this: use a token whose role covers this "
            "service and environment (an admin can create one with `sami-control token create ...`)"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return "fix the values named above and run the command again"
    if code == grpc.StatusCode.NOT_FOUND:
        return (
            "check the name or id: `sami list`, `sami artifact list`, `sami cluster list` and "
            "`sami manifests list` show what exists"
        )
    if code == grpc.StatusCode.ALREADY_EXISTS:
        if "request_id" not in err.message:
            # A cluster or an artifact that exists: the server's message names it.
            return ""
        return (
            "that --request-id was already used for a different request: repeat the original "
            "request exactly, or use a new --request-id"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"sami-control at {addr} did not answer in time: check that it is healthy, then retry"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ""  # The server's message names the command that fixes it.
    if code == grpc.StatusCode.DATA_LOSS:
        return "run `sami get ID` to read the outcome from the control plane"
    return "this looks like a problem in sami-control: check its logs, then retry"


@dataclass
class Console:
    """Where the CLI writes: results on `out`, diagnostics on `err`; every line flushed, so
    progress shows up live in CI logs even when stdout is a pipe."""

    out: TextIO
    err: TextIO

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        print(f"sami: {text}", file=self.err, flush=True)

"""`sami secret`, `sami var` and `sami cluster recipient(s)`: the secrets and variables of a
service in an environment, and the keys its cluster's secrets are encrypted to.

    sami secret set SERVICE NAME --env ENV [--from-file FILE]   (value: stdin, or a prompt)
    sami secret list [SERVICE] [--env ENV]
    sami secret rm SERVICE NAME --env ENV
    sami secret rekey SERVICE --env ENV --identity FILE
    sami var set SERVICE NAME=VALUE --env ENV
    sami var list [SERVICE] [--env ENV]
    sami var rm SERVICE NAME --env ENV
    sami cluster recipients [CLUSTER]
    sami cluster recipient add CLUSTER AGE1… [--label TEXT]
    sami cluster recipient rm CLUSTER AGE1…

A secret's value is read from stdin, a file or a prompt, never from an argument, and
encrypted here (age) to the recipients of the cluster that serves the environment: sami-control
stores and shows ciphertext only (docs/secrets.md). `register(subparsers)` adds `secret` and
`var`; `register_recipients(cluster_subparsers)` adds the recipient commands to `cluster`.
"""

from __future__ import annotations

import argparse

from sami_client import render, sealing
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode, SamiError, UsageError
from sami_client.pb import secret_pb2

ENV_HELP = "stage, production or pull_request"


def register(commands: Subparsers) -> None:
    secret = commands.add_parser(
        "secret", help="secrets of a service in an environment (encrypted here, to its cluster)"
    )
    sub = secret.add_subparsers(dest="secret_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "set",
        help="set a secret (a new version) from stdin, a file or a prompt",
        description="Reads the value from --from-file, else from stdin as it is (a final "
        'newline included: `printf %%s "$VALUE" | sami secret set …`), else, on a terminal, '
        "asks for it twice without echo. Never give it as an argument. It is encrypted here "
        "to the recipients of the cluster that serves the environment; sami-control stores "
        "the ciphertext only.",
    )
    p.add_argument("service")
    p.add_argument("name", help="as Swarm names secrets: letters, digits, '_', '-', '.'")
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.add_argument("--from-file", metavar="FILE", help="read the value from FILE")
    p.set_defaults(run=run_set)

    p = sub.add_parser("list", help="names, versions, who set them and when (never values)")
    p.add_argument("service", nargs="?", default="")
    p.add_argument("--env", default="", help=ENV_HELP)
    p.set_defaults(run=run_list)

    p = sub.add_parser(
        "rm", help="new deployments no longer get the secret (its versions stay for rollbacks)"
    )
    p.add_argument("service")
    p.add_argument("name")
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.set_defaults(run=run_rm)

    p = sub.add_parser(
        "rekey",
        help="re-encrypt a service's secrets to its cluster's recipients as they are now",
        description="Fetches the current versions' ciphertexts, opens them with the age "
        "identity in FILE (e.g. an escrow key added with `sami cluster recipient add`), "
        "encrypts them to the cluster's current recipients and sets them again.",
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.add_argument(
        "--identity", required=True, metavar="FILE", help="an age identity file that opens them"
    )
    p.set_defaults(run=run_rekey)

    var = commands.add_parser(
        "var", help="variables of a service in an environment (fill ${NAME} in stack files)"
    )
    sub = var.add_subparsers(dest="var_command", required=True, metavar="COMMAND")
    p = sub.add_parser("set", help="set NAME=VALUE (not secret: stored and shown plainly)")
    p.add_argument("service")
    p.add_argument("assignment", metavar="NAME=VALUE")
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.set_defaults(run=run_var_set)
    p = sub.add_parser("list", help="variables and their values")
    p.add_argument("service", nargs="?", default="")
    p.add_argument("--env", default="", help=ENV_HELP)
    p.set_defaults(run=run_var_list)
    p = sub.add_parser("rm", help="remove a variable")
    p.add_argument("service")
    p.add_argument("name")
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.set_defaults(run=run_var_rm)


def register_recipients(cluster: Subparsers) -> None:
    p = cluster.add_parser(
        "recipients", help="the age keys a cluster's secrets are encrypted to (admin)"
    )
    p.add_argument("cluster", nargs="?", default="")
    p.set_defaults(run=run_recipients)
    p = cluster.add_parser("recipient", help="add or remove a cluster's age key (admin)")
    sub = p.add_subparsers(dest="recipient_command", required=True, metavar="COMMAND")
    add = sub.add_parser(
        "add", help="add a public key (e.g. an escrow key for `sami secret rekey`)"
    )
    add.add_argument("cluster")
    add.add_argument("recipient", metavar="AGE1…")
    add.add_argument("--label", default="", help="what it is, e.g. 'escrow key, in the safe'")
    add.set_defaults(run=run_recipient_add)
    rm = sub.add_parser("rm", help="remove a key (a lost host's): then set its secrets again")
    rm.add_argument("cluster")
    rm.add_argument("recipient", metavar="AGE1…")
    rm.set_defaults(run=run_recipient_rm)


# Secrets


def _where(service: str, env: str) -> str:
    return f"{service} in {env}"


def run_set(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    # Asked first: a caller who may not set it, or a cluster without keys, is told before
    # the value is typed.
    keys = client.get_recipients(args.service, args.env)
    value = sealing.read_value(args.from_file)
    ciphertext = sealing.seal(value, keys.recipients)
    del value
    secret = client.set_secret(
        args.service, args.env, args.name, ciphertext, keys.recipients_digest
    )
    ctx.show(
        f"secret {secret.name} of {_where(secret.service, secret.environment)}: version "
        f"{secret.version}, encrypted to the {len(secret.recipients)} recipients of cluster "
        f"{keys.cluster}",
        secret,
    )
    return int(ExitCode.SUCCEEDED)


def _status(s: secret_pb2.Secret) -> str:
    if s.removed:
        return "removed"
    return "stale recipients: rekey" if s.stale_recipients else "ok"


def secrets_table(secrets: list[secret_pb2.Secret]) -> str:
    return render.table(
        ("SERVICE", "ENV", "NAME", "VERSION", "SET BY", "SET AT", "STATUS"),
        [
            (
                s.service,
                s.environment,
                s.name,
                str(s.version),
                s.set_by,
                render.timestamp(s.set_time),
                _status(s),
            )
            for s in secrets
        ],
    )


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    secrets = ctx.client().list_secrets(args.service, args.env)
    text = secrets_table(secrets) if secrets else "no secrets"
    ctx.show(text, {"secrets": [render.to_dict(s) for s in secrets]})
    return int(ExitCode.SUCCEEDED)


def run_rm(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.client().remove_secret(args.service, args.env, args.name)
    ctx.show(
        f"removed secret {s.name} of {_where(s.service, s.environment)}: new deployments no "
        f"longer get it (version {s.version} stays for rollbacks)",
        s,
    )
    return int(ExitCode.SUCCEEDED)


def run_rekey(args: argparse.Namespace, ctx: Context) -> int:
    identities = sealing.load_identities(args.identity)
    client = ctx.client()
    keys = client.get_recipients(args.service, args.env)
    payloads = client.export_secrets(args.service, args.env)
    done: list[secret_pb2.Secret] = []
    failed: list[str] = []
    for p in payloads:
        value = sealing.open_sealed(p.ciphertext, identities)
        if value is None:
            failed.append(p.name)
            ctx.console.error(
                f"{p.name} v{p.version}: not encrypted to the identity in {args.identity}; "
                f"set it again with `sami secret set {args.service} {p.name} --env {args.env}`"
            )
            continue
        try:
            secret = client.set_secret(
                args.service,
                args.env,
                p.name,
                sealing.seal(value, keys.recipients),
                keys.recipients_digest,
                rekey=True,
            )
        except SamiError as err:
            failed.append(p.name)
            ctx.console.error(f"{p.name} v{p.version}: {err.message}")
            continue
        finally:
            del value
        done.append(secret)
        ctx.console.error(f"{p.name}: version {p.version} → {secret.version}")
    summary = (
        f"rekeyed {len(done)} of {len(payloads)} secrets of {_where(args.service, args.env)} "
        f"to the {len(keys.recipients)} recipients of cluster {keys.cluster}"
    )
    ctx.show(summary, {"secrets": [render.to_dict(s) for s in done], "failed": failed})
    return int(ExitCode.REJECTED if failed else ExitCode.SUCCEEDED)


# Variables


def run_var_set(args: argparse.Namespace, ctx: Context) -> int:
    name, eq, value = args.assignment.partition("=")
    if not eq or not name:
        raise UsageError(f"give the variable as NAME=VALUE, not {args.assignment!r}")
    v = ctx.client().set_variable(args.service, args.env, name, value)
    ctx.show(f"{v.name}={v.value} for {_where(v.service, v.environment)}", v)
    return int(ExitCode.SUCCEEDED)


def run_var_list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_variables(args.service, args.env)
    text = (
        render.table(
            ("SERVICE", "ENV", "NAME", "VALUE", "SET BY", "SET AT"),
            [
                (v.service, v.environment, v.name, v.value, v.set_by, render.timestamp(v.set_time))
                for v in found
            ],
        )
        if found
        else "no variables"
    )
    ctx.show(text, {"variables": [render.to_dict(v) for v in found]})
    return int(ExitCode.SUCCEEDED)


def run_var_rm(args: argparse.Namespace, ctx: Context) -> int:
    v = ctx.client().remove_variable(args.service, args.env, args.name)
    ctx.show(f"removed variable {v.name} of {_where(v.service, v.environment)}", v)
    return int(ExitCode.SUCCEEDED)


# Recipients


def run_recipients(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_recipients(args.cluster)
    text = (
        render.table(
            ("CLUSTER", "RECIPIENT", "AGENT", "ADDED BY", "ADDED", "LAST SEEN", "LABEL"),
            [
                (
                    r.cluster,
                    r.recipient,
                    r.agent_id or "-",
                    r.added_by,
                    render.timestamp(r.add_time),
                    render.timestamp(r.last_seen_time) if r.HasField("last_seen_time") else "-",
                    r.label,
                )
                for r in found
            ],
        )
        if found
        else "no recipients"
    )
    ctx.show(text, {"recipients": [render.to_dict(r) for r in found]})
    return int(ExitCode.SUCCEEDED)


def run_recipient_add(args: argparse.Namespace, ctx: Context) -> int:
    r = ctx.client().add_recipient(args.cluster, args.recipient, args.label)
    ctx.show(
        f"added recipient {r.recipient} to cluster {r.cluster}; secrets set before need "
        "`sami secret rekey` (or set again) to be readable with it",
        r,
    )
    return int(ExitCode.SUCCEEDED)


def run_recipient_rm(args: argparse.Namespace, ctx: Context) -> int:
    r = ctx.client().remove_recipient(args.cluster, args.recipient)
    ctx.show(
        f"removed recipient {r.recipient} of cluster {r.cluster}; what was encrypted to it "
        "stays readable with its key: set those secrets again (new values)",
        r,
    )
    return int(ExitCode.SUCCEEDED)

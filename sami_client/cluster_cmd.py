"""`sami cluster create|update|list` and `sami agents`: the clusters, the environments each serves,
and the agents that run deployments on them.

    sami cluster create NAME --env ENV [--env ENV]...
    sami cluster update NAME --env ENV [--env ENV]...
    sami cluster list
    sami agents [--cluster NAME]
    sami agents rm CLUSTER AGENT_ID
    sami cluster recipients [CLUSTER]          (secret_cmd.py)
    sami cluster recipient add|rm CLUSTER AGE1…

`register(subparsers)` adds the commands to the `sami` CLI.
"""

from __future__ import annotations

import argparse

from sami_client import render, secret_cmd
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode


def register(commands: Subparsers) -> None:
    cluster = commands.add_parser("cluster", help="clusters and the environments they serve")
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")

    p = sub.add_parser("create", help="add a cluster serving some environments")
    p.add_argument("name")
    p.add_argument(
        "--env", action="append", required=True, help="an environment it serves (repeatable)"
    )
    p.set_defaults(run=run_create)

    p = sub.add_parser(
        "update",
        help="set the environments a cluster serves",
        description="Sets every environment the cluster serves: name them all (one left out "
        "is no longer served by it), e.g. `sami cluster update main --env stage --env "
        "production --env pull_request` to add previews.",
    )
    p.add_argument("name")
    p.add_argument(
        "--env", action="append", required=True, help="an environment it serves (repeatable)"
    )
    p.set_defaults(run=run_update)

    p = sub.add_parser("list", help="list clusters")
    p.set_defaults(run=run_list)
    secret_cmd.register_recipients(sub)

    p = commands.add_parser("agents", help="list agents and whether they are connected")
    p.add_argument("--cluster", default="", help="only agents of this cluster")
    p.set_defaults(run=run_agents)
    rm = p.add_subparsers(dest="agents_command").add_parser(
        "rm", help="forget the record of an agent that is gone (admin)"
    )
    rm.add_argument("cluster")
    rm.add_argument("agent_id")
    rm.set_defaults(run=run_agent_rm)


def run_create(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.client().create_cluster(args.name, args.env)
    text = f"cluster {cluster.cluster_id} serves {', '.join(cluster.environments)}"
    ctx.show(text, cluster)
    return int(ExitCode.SUCCEEDED)


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    clusters = ctx.client().list_clusters()
    ctx.show(render.clusters_table(clusters), [render.to_dict(c) for c in clusters])
    return int(ExitCode.SUCCEEDED)


def run_update(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.client().update_cluster(args.name, args.env)
    text = f"cluster {cluster.cluster_id} serves {', '.join(cluster.environments)}"
    ctx.show(text, render.to_dict(cluster))
    return int(ExitCode.SUCCEEDED)


def run_agents(args: argparse.Namespace, ctx: Context) -> int:
    agents = ctx.client().list_agents(args.cluster)
    ctx.show(render.agents_table(agents), [render.to_dict(a) for a in agents])
    return int(ExitCode.SUCCEEDED)


def run_agent_rm(args: argparse.Namespace, ctx: Context) -> int:
    agent = ctx.client().remove_agent(args.cluster, args.agent_id)
    ctx.show(f"removed agent {agent.agent_id} of cluster {agent.cluster}", render.to_dict(agent))
    return int(ExitCode.SUCCEEDED)

"""The domain core in-process: manifests synced and resolved (the strict stack policy, the
original sami.yaml), artifacts that fit their deployment, rollbacks, clusters that change,
and how a finished rollout is logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from sami_control.core.commands import (
    AssignCommand,
)
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import (
    ArtifactKind,
    Deployment,
    Outcome,
    Principal,
    Role,
)
from sami_control.core.requests import ArtifactInput
from sami_control.core.sessions import AgentSession
from sami_control.core.settings import Settings
from sami_control.storage.sqlite import SQLiteStore
from tests import samples
from tests.control.core_env import (
    ADMIN,
    AGENT_C1,
    AGENT_C2,
    REF,
    REF2,
    Clock,
    connect,
    deploy,
    drain,
    get,
    tick,
)


async def test_sync_validates_again_and_stores_nothing_when_invalid(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    before, _ = await cp.manifests.get(ADMIN, "current")
    bad = samples.repo(("web",))
    bad["services/web/swarm/stage/sami.yaml"] += b"colour: blue\n"
    with pytest.raises(InvalidArgument) as ei:
        await cp.manifests.sync(ADMIN, "", list(bad.items()))
    field, description = ei.value.violations[0]
    assert field.startswith("files[services/web/swarm/stage/sami.yaml]:")
    assert "colour" in description
    assert (await cp.manifests.get(ADMIN, "current"))[0].id == before.id
    revs, _, _ = await cp.manifests.list(ADMIN, 10, "")
    assert len(revs) == 1


async def test_sync_is_content_addressed(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    first, _ = await cp.manifests.get(ADMIN, "current")
    other, created = await cp.manifests.sync(ADMIN, "a" * 40, list(samples.repo(("web",)).items()))
    assert created and other.id != first.id
    again, created = await cp.manifests.sync(ADMIN, "", list(samples.repo().items()))
    assert not created and again.id == first.id
    assert (await cp.manifests.get(ADMIN, "current"))[0].id == first.id  # current again


async def test_deployment_resolves_manifest_and_assignment_carries_its_files(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    rev, _ = await cp.manifests.get(ADMIN, "current")
    d = await deploy(cp, environment="pull_request", pull_request=12)
    assert (d.stack_name, d.deployment_type, d.manifest_revision) == ("pr-12_web", "swarm", rev.id)
    assert d.stack_files == ["stack.yml"] and d.image_services == ["web"]
    assert d.converge_timeout == 60
    a = await connect(cp, "b1", AGENT_C2)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    assert sorted(cmd.files) == ["sami.yaml", "stack.yml"]
    assert cmd.files["stack.yml"] == samples.repo()["services/web/swarm/pull_request/stack.yml"]


async def test_deploy_refused_without_manifest_or_previews(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    with pytest.raises(FailedPrecondition, match=r"add services/shop/<type>/stage/sami\.yaml"):
        await deploy(cp, service="shop")
    await cp.manifests.sync(ADMIN, "", list(samples.repo(pr_deploy=False).items()))
    with pytest.raises(FailedPrecondition, match="pr_deploy: true"):
        await deploy(cp, environment="pull_request", pull_request=3)
    assert (await cp.deployments.list(ADMIN, "", "", None, 0, ""))[0] == []


async def test_scoped_deployer_cannot_sync(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    scoped = Principal("t9", "ci-web", Role.DEPLOYER, services=("web",))
    with pytest.raises(PermissionDenied, match="unscoped"):
        await cp.manifests.sync(scoped, "", list(samples.repo().items()))


async def _succeed(cp: ControlPlane, d: Deployment, agent: AgentSession) -> None:
    await tick(cp)
    (cmd,) = [c for c in drain(agent) if isinstance(c, AssignCommand)]
    lease, epoch = cmd.deployment.lease_id, cmd.deployment.epoch
    await cp.reports.ack(agent, d.id, lease, epoch)
    await cp.reports.result(agent, d.id, lease, epoch, Outcome.SUCCEEDED, "")


async def test_a_rollback_names_what_it_goes_back_to_and_the_server_checks_it(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a = await connect(cp, "a1")
    first = await deploy(cp, REF)
    await _succeed(cp, first, a)
    second = await deploy(cp, REF2)
    await _succeed(cp, second, a)
    back = await deploy(cp, REF, rollback_of=first.id, reason=f"rollback to {first.id}")
    assert back.rollback_of == first.id and (await get(cp, back)).rollback_of == first.id
    # Not a deployment of this service and environment.
    with pytest.raises(InvalidArgument, match="rollback_of"):
        await deploy(cp, REF, environment="production", rollback_of=first.id)
    # Not the artifact the target deployed.
    with pytest.raises(InvalidArgument, match="another artifact"):
        await deploy(cp, REF2, rollback_of=first.id)
    # Not a deployment that ran (the rollback itself is still queued).
    with pytest.raises(FailedPrecondition, match="not a SUCCEEDED deploy"):
        await deploy(cp, REF, rollback_of=back.id)
    with pytest.raises(InvalidArgument, match="does not exist"):
        await deploy(cp, REF, rollback_of="dep_0000000000000000")
    # Refused requests stored nothing: the rollback is still the newest deployment.
    newest, _ = await cp.deployments.list(ADMIN, "web", "stage", None, 1, "")
    assert [d.id for d in newest] == [back.id]


async def test_a_strict_stack_policy_refuses_at_sync_what_would_give_a_stack_the_host(
    tmp_path: Path,
) -> None:
    """`sami-control serve --stack-policy strict`: the control plane checks every synced
    stack file again, whatever the client linted; a refused sync keeps the revision."""
    host = samples.STACK + "    privileged: true\n    volumes:\n      - /var/run/docker.sock:/s\n"
    store = SQLiteStore(tmp_path / "strict")
    try:
        strict = ControlPlane(store, Settings(stack_policy="strict"))
        before, _ = await strict.manifests.sync(ADMIN, "", list(samples.repo().items()))
        with pytest.raises(InvalidArgument, match="privileged") as refused:
            await strict.manifests.sync(ADMIN, "", list(samples.repo(stack=host).items()))
        assert "docker.sock" in str(refused.value.violations)
        rev, current = await strict.manifests.get(ADMIN, "current")
        assert current and rev.id == before.id
        # The same files under the default policy: Swarm allows them.
        lax = ControlPlane(store, Settings())
        rev, created = await lax.manifests.sync(ADMIN, "", list(samples.repo(stack=host).items()))
        assert created and rev.id != before.id
    finally:
        await store.close()


async def test_the_original_manifest_syncs_and_deploys_its_one_stack_file(
    env: tuple[ControlPlane, Clock],
) -> None:
    """services/camerdevs/compose/stage/ as the original repo has it: a sami.yaml with no
    stack_files, next to camerdevs-stack.yml."""
    cp, _ = env
    folder = "services/camerdevs/compose/stage"
    stack = b"version: '3.8'\nservices:\n  web:\n    image: ghcr.io/osscameroon/camerdevs\n"
    files = {
        f"{folder}/sami.yaml": (
            b"version: v1beta\nservice_name: camerdevs\ntype: compose\npr_deploy: false\n"
        ),
        f"{folder}/camerdevs-stack.yml": stack,
    }
    await cp.manifests.sync(ADMIN, "", list(files.items()))
    ref = "127.0.0.1:5000/camerdevs@sha256:" + "c" * 64
    await cp.artifacts.register(ADMIN, ArtifactInput("camerdevs", ArtifactKind.IMAGE, ref, ""))
    d = await deploy(cp, ref, service="camerdevs")
    assert (d.deployment_type, d.stack_name) == ("compose", "stage_camerdevs")
    assert (d.stack_files, d.image_services) == (["camerdevs-stack.yml"], ["web"])
    a, _ = await cp.agents.connect(AGENT_C1, "a1", "test", ["swarm", "compose"], [])
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    assert cmd.files["camerdevs-stack.yml"] == stack


async def test_a_reference_is_stored_pinned_and_found_with_any_tag(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    digest = "sha256:" + "d" * 64
    art, created = await cp.artifacts.register(
        ADMIN, ArtifactInput("api", ArtifactKind.IMAGE, f"ghcr.io/x/api:1.2@{digest}", "")
    )
    assert created and art.ref == f"ghcr.io/x/api@{digest}" and art.tags == ["1.2"]
    again, created = await cp.artifacts.register(
        ADMIN, ArtifactInput("api", ArtifactKind.IMAGE, f"ghcr.io/x/api@{digest}", "")
    )
    assert (again.id, created) == (art.id, False)
    async with cp.store.tx() as tx:
        for ref in (f"ghcr.io/x/api:main@{digest}", f"ghcr.io/x/api@{digest}", f"api:9@{digest}"):
            assert (await cp.artifacts.resolve(tx, ref, "artifact")).id == art.id, ref
    # Docker Hub's familiar names are the same image as their full names.
    hub, _ = await cp.artifacts.register(
        ADMIN, ArtifactInput("proxy", ArtifactKind.IMAGE, f"nginx:1.27@{digest}", "")
    )
    async with cp.store.tx() as tx:
        found = await cp.artifacts.resolve(tx, f"docker.io/library/nginx:1.27@{digest}", "artifact")
    assert found.id == hub.id
    with pytest.raises(InvalidArgument, match="tag"):
        await cp.artifacts.register(
            ADMIN, ArtifactInput("api", ArtifactKind.IMAGE, f"ghcr.io/x/api:@{digest}", "")
        )


async def test_an_artifact_of_another_kind_than_the_type_deploys_is_refused(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    archive = "sha256:" + "e" * 64
    await cp.artifacts.register(
        ADMIN,
        ArtifactInput("web", ArtifactKind.STATIC_FILE, "https://example.com/site.tgz", archive),
    )
    with pytest.raises(
        FailedPrecondition, match="static_file artifact, but web in stage is a swarm"
    ):
        await deploy(cp, f"web@{archive}")
    assert (await cp.deployments.list(ADMIN, "web", "", None, 0, ""))[0] == []


async def test_a_cluster_gains_and_drops_environments(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    c = await cp.clusters.update(ADMIN, "clusters/c1", ["stage", "production", "production"])
    assert c.environments == ["production", "stage"]
    with pytest.raises(
        FailedPrecondition, match="'pull_request' is already served by cluster 'c2'"
    ):
        await cp.clusters.update(ADMIN, "c1", ["stage", "pull_request"])
    # Move pull_request from c2 to c1 (c2 takes production).
    assert (await cp.clusters.update(ADMIN, "c1", ["stage"])).environments == ["stage"]
    preview = await deploy(cp, environment="pull_request", pull_request=4)
    with pytest.raises(
        FailedPrecondition, match=f"unfinished deployments in pull_request .{preview.id}"
    ):
        await cp.clusters.update(ADMIN, "c2", ["production"])
    await cp.deployments.cancel(ADMIN, preview.id, "")
    await cp.clusters.update(ADMIN, "c2", ["production"])
    await cp.clusters.update(ADMIN, "c1", ["stage", "pull_request"])
    assert (await cp.clusters.get(ADMIN, "c1")).environments == ["pull_request", "stage"]
    assert (await deploy(cp, environment="pull_request", pull_request=5)).cluster == "c1"
    with pytest.raises(NotFound, match="cluster 'c9' does not exist"):
        await cp.clusters.update(ADMIN, "c9", ["stage"])
    with pytest.raises(InvalidArgument, match="at least one environment"):
        await cp.clusters.update(ADMIN, "c1", [])
    with pytest.raises(PermissionDenied):
        await cp.clusters.update(AGENT_C1, "c1", ["stage"])


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.ROLLED_BACK])
async def test_a_failed_rollout_is_logged_at_warning(
    env: tuple[ControlPlane, Clock], outcome: Outcome
) -> None:
    cp, _ = env
    with structlog.testing.capture_logs() as logs:
        d = await deploy(cp)
        a = await connect(cp, "a1")
        await tick(cp)
        (cmd,) = drain(a)
        assert isinstance(cmd, AssignCommand)
        lease, epoch = cmd.deployment.lease_id, cmd.deployment.epoch
        await cp.reports.ack(a, d.id, lease, epoch)
        await cp.reports.result(a, d.id, lease, epoch, outcome, "health check failed")
    levels = {
        line["state"]: line["log_level"] for line in logs if line["event"] == "deployment_state"
    }
    assert levels == {
        "QUEUED": "info",
        "ASSIGNED": "info",
        "IN_PROGRESS": "info",
        outcome.name: "warning",
    }

"""`sami_client.history`: which deployment is live and where a rollback goes, on histories
too long or too odd to build through a control plane in every test."""

from __future__ import annotations

from sami.v1 import artifact_pb2, deployment_pb2
from sami_client import history

SUCCEEDED = deployment_pb2.SUCCEEDED
FAILED = deployment_pb2.FAILED
QUEUED = deployment_pb2.QUEUED


def dep(
    ident: str,
    char: str,
    state: deployment_pb2.DeploymentState = SUCCEEDED,
    *,
    reason: str = "",
    rollback_of: str = "",
    pr: int = 0,
    teardown: bool = False,
) -> deployment_pb2.Deployment:
    return deployment_pb2.Deployment(
        id=ident,
        service="web",
        environment="pull_request" if pr else "stage",
        pull_request=pr,
        state=state,
        reason=reason or (history.rollback_reason(rollback_of) if rollback_of else ""),
        rollback_of=rollback_of,
        action=deployment_pb2.TEARDOWN if teardown else deployment_pb2.DEPLOY,
        artifact=artifact_pb2.Artifact(
            id=f"art_{char}", artifact_name="web", digest="sha256:" + char * 64
        ),
    )


def newest_first(*deployments: deployment_pb2.Deployment) -> list[deployment_pb2.Deployment]:
    """Written oldest first, as one reads a story; listed newest first, as the API does."""
    return list(reversed(deployments))


def target_id(h: list[deployment_pb2.Deployment]) -> str | None:
    plan = history.rollback_target(h)
    return plan.target.id if plan.target else None


def test_live_is_the_newest_succeeded_deploy() -> None:
    h = newest_first(dep("a", "a"), dep("b", "b"), dep("c", "c", FAILED), dep("d", "d", QUEUED))
    live = history.live(h)
    assert live is not None and live.id == "b"
    assert history.live([]) is None
    assert history.live(newest_first(dep("x", "x", FAILED))) is None
    # Deployments stored before actions existed have none: deploys.
    old = dep("o", "o")
    old.action = deployment_pb2.DEPLOYMENT_ACTION_UNSPECIFIED
    assert history.live([old]) == old


def test_nothing_is_live_after_a_teardown_and_previews_are_decided_one_by_one() -> None:
    h = newest_first(
        dep("p5", "a", pr=5),
        dep("p6", "b", pr=6),
        dep("p6x", "c", FAILED, pr=6),
        dep("t5", "a", pr=5, teardown=True),
    )
    assert history.live([d for d in h if d.pull_request == 5]) is None
    assert history.live_ids(h) == {"p6"}
    # A teardown that failed leaves the preview live.
    h.insert(0, dep("t6", "b", FAILED, pr=6, teardown=True))
    assert history.live_ids(h) == {"p6"}


def test_rollback_skips_the_live_digest_and_failures() -> None:
    h = newest_first(dep("a", "a"), dep("b", "b"), dep("b2", "b"), dep("c", "c", FAILED))
    plan = history.rollback_target(h)
    assert plan.live is not None and plan.live.id == "b2"
    assert plan.target is not None and plan.target.id == "a"
    assert target_id(newest_first(dep("a", "a"), dep("a2", "a"))) is None
    assert history.rollback_target([]) == history.RollbackPlan(None, None)


def test_repeated_rollbacks_walk_back_one_artifact_at_a_time() -> None:
    h = newest_first(dep("a", "a"), dep("b", "b"), dep("c", "c"))
    assert target_id(h) == "b"
    h.insert(0, dep("r1", "b", rollback_of="b"))
    assert target_id(h) == "a"  # below B, not back up to C
    h.insert(
        0, dep("r2", "a", rollback_of="a", reason=history.rollback_reason("a", "still broken"))
    )
    assert target_id(h) is None


def test_a_rollback_after_a_new_deploy_returns_to_what_ran_before_it() -> None:
    h = newest_first(
        dep("a", "a"),
        dep("b", "b"),
        dep("c", "c"),
        dep("r1", "b", rollback_of="b"),
        dep("d", "d"),
    )
    # What ran before D was B (by the rollback R1), not C.
    assert target_id(h) == "r1"
    # And from a rollback to that rollback, the chain leads below B.
    h.insert(0, dep("r2", "b", rollback_of="r1"))
    assert target_id(h) == "a"


def test_a_rollback_reason_naming_another_artifact_is_not_followed() -> None:
    # Someone typed the reason by hand on a deployment of another artifact: the text is no
    # rollback (only rollback_of makes one), and a rollback_of naming a deployment of
    # another artifact is not followed either.
    h = newest_first(dep("a", "a"), dep("b", "b"), dep("c", "c", reason="rollback to a"))
    assert target_id(h) == "b"
    h = newest_first(dep("a", "a"), dep("b", "b"), dep("c", "c", rollback_of="a"))
    assert target_id(h) == "b"


def test_reasons_round_trip() -> None:
    d = dep("r", "a", rollback_of="dep_1", reason=history.rollback_reason("dep_1", "bad: really"))
    assert history.rolled_back_to(d) == "dep_1"
    assert history.is_rollback(d, "bad: really") and not history.is_rollback(d, "")
    assert history.rolled_back_to(dep("x", "a", reason="rolled back by hand")) == ""
    p = dep("p", "a", reason=history.promote_reason("stage", "dep_2", "go"))
    assert history.is_promotion(p, "stage", "go")
    assert not history.is_promotion(p, "production", "go")
    assert not history.is_promotion(p, "stage", "")


def of_kind(
    d: deployment_pb2.Deployment, kind: artifact_pb2.ArtifactKind, deployment_type: str = "swarm"
) -> deployment_pb2.Deployment:
    d.artifact.kind = kind
    d.deployment_type = deployment_type
    return d


def test_a_rollback_never_picks_an_artifact_of_another_kind() -> None:
    image, archive = artifact_pb2.ARTIFACT_KIND_IMAGE, artifact_pb2.ARTIFACT_KIND_STATIC_FILE
    # b: an archive deployed to the swarm service before the server refused it.
    h = newest_first(
        of_kind(dep("a", "a"), image),
        of_kind(dep("b", "b"), archive),
        of_kind(dep("c", "c"), image),
    )
    assert target_id(h) == "a"
    assert not history.redeployable(h[1])
    # The service became a site: the older image deployments are no target for it.
    h = newest_first(
        of_kind(dep("a", "a"), image),
        of_kind(dep("b", "b"), archive, "static_file"),
        of_kind(dep("c", "c"), archive, "static_file"),
    )
    assert target_id(h) == "b"
    h = newest_first(of_kind(dep("a", "a"), image), of_kind(dep("b", "b"), archive, "static_file"))
    assert target_id(h) is None
    # Deployments that do not say their kind or type are not second-guessed.
    assert target_id(newest_first(dep("a", "a"), dep("b", "b"))) == "a"


def test_fits_names_the_kind_a_deployment_type_deploys() -> None:
    """What `sami promote --type T` checks before it picks its source deployment."""
    image = of_kind(dep("a", "a"), artifact_pb2.ARTIFACT_KIND_IMAGE)
    assert history.fits(image) and history.fits(image, "compose") and history.fits(image, "cron")
    assert not history.fits(image, "static_file")
    site = of_kind(dep("b", "b"), artifact_pb2.ARTIFACT_KIND_STATIC_FILE, "static_file")
    assert history.fits(site) and not history.fits(site, "swarm")
    module = of_kind(dep("c", "c"), artifact_pb2.ARTIFACT_KIND_MODULE)
    assert not history.redeployable(module)


def finished(d: deployment_pb2.Deployment, at: float) -> deployment_pb2.Deployment:
    d.finish_time.FromSeconds(int(at))
    return d


def test_an_artifact_is_live_since_its_success_unless_it_went_wrong_after() -> None:
    digest_a = "sha256:" + "a" * 64
    h = newest_first(
        finished(dep("d1", "a", FAILED), 100),
        finished(dep("d2", "a"), 200),
        finished(dep("d3", "b"), 300),
    )
    # A failure before the success does not count, another artifact does not either.
    assert history.live_since(h, digest_a) == 200
    assert history.live_since(h, "sha256:" + "c" * 64) is None
    later = newest_first(*reversed(h), finished(dep("d4", "a", deployment_pb2.ROLLED_BACK), 400))
    assert history.live_since(later, digest_a) is None

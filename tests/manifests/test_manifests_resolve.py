"""resolve(): what the control plane deploys with, and errors that say what to add."""

from __future__ import annotations

import pytest
from manifest_fixtures import EXAMPLES, JOBS, SITE, WEB, WEB_MANIFEST

from sami_manifests import (
    AmbiguousDeploymentType,
    CronSettings,
    InvalidManifest,
    ManifestError,
    ManifestNotFound,
    NotSupported,
    StaticFileSettings,
    default_stack_name,
    read_tree,
    resolve,
)

Files = dict[str, bytes]


def test_resolves_a_swarm_manifest(files: Files) -> None:
    manifest = resolve(files, "web", None, "stage")
    assert manifest.deployment_type == "swarm"
    assert manifest.environment == "stage"
    assert manifest.folder == WEB
    assert manifest.manifest_path == f"{WEB}/sami.yaml"
    assert manifest.stack_files == ("web-stack.yml",)
    assert manifest.image_services == ("web",)
    assert manifest.converge_timeout == 300
    assert manifest.cluster == "main"
    assert manifest.stack_name is None
    assert manifest.stack_name_for() == "stage_web"
    assert manifest.pr_deploy is False
    assert manifest.static_file is None and manifest.cron is None
    # Exactly the environment folder, by path relative to it.
    assert dict(manifest.files) == {
        "sami.yaml": files[f"{WEB}/sami.yaml"],
        "web-stack.yml": files[f"{WEB}/web-stack.yml"],
        "conf/web.conf": files[f"{WEB}/conf/web.conf"],
    }
    assert resolve(files, "web", "swarm", "stage") == manifest
    assert resolve(files, "web", "", "stage") == manifest


def test_resolves_cron_and_static_file(files: Files) -> None:
    jobs = resolve(files, "jobs", "cron", "production")
    assert jobs.cron == CronSettings(schedule="*/15 * * * *")
    assert jobs.stack_files == ("job.yml",)
    assert jobs.image_services == ("cleanup",)  # the only service of job.yml
    assert jobs.folder == JOBS
    site = resolve(files, "site", None, "production")
    assert site.static_file == StaticFileSettings(target_dir="/srv/www/site", keep_releases=5)
    assert site.stack_files == () and site.image_services == ()
    assert site.folder == SITE


def test_production_matches_a_prod_folder() -> None:
    files = read_tree(EXAMPLES)
    manifest = resolve(files, "camerdevs", "compose", "production")
    assert manifest.folder == "services/camerdevs/compose/prod"
    assert manifest.environment == "production"
    assert manifest.stack_name_for() == "camerdevs"  # the manifest's stack_name
    assert manifest.converge_timeout == 600
    assert [w.code for w in manifest.warnings] == ["environment-alias"]
    # The alias works in the request too.
    assert resolve(files, "camerdevs", None, "prod") == manifest


def test_previews_resolve_the_pull_request_folder() -> None:
    files = read_tree(EXAMPLES)
    manifest = resolve(files, "camerdevs", None, "pull_request")
    assert manifest.pr_deploy is True
    assert manifest.stack_name_for(42) == "pr-42_camerdevs"
    with pytest.raises(ValueError, match="pull request number"):
        manifest.stack_name_for()


def test_files_of_nested_folders_travel_with_the_manifest() -> None:
    manifest = resolve(read_tree(EXAMPLES), "prometheus", None, "production")
    assert sorted(manifest.files) == [
        "grafana/datasources.yml",
        "prometheus-stack.yml",
        "prometheus/prometheus.yml",
        "sami.yaml",
    ]
    assert manifest.stack_name_for() == "monitoring"


def test_missing_service_names_the_folder_to_add(files: Files) -> None:
    with pytest.raises(ManifestNotFound, match=r"add services/api/swarm/stage/sami\.yaml"):
        resolve(files, "api", "swarm", "stage")
    with pytest.raises(ManifestNotFound, match=r"add services/api/<type>/stage/sami\.yaml"):
        resolve(files, "api", None, "stage")


def test_missing_environment_names_the_folder_to_add(files: Files) -> None:
    with pytest.raises(ManifestNotFound) as caught:
        resolve(files, "web", None, "production")
    message = str(caught.value)
    assert "add services/web/<type>/production/sami.yaml" in message
    assert "swarm/stage" in message  # what the service does have
    with pytest.raises(ManifestNotFound, match=r"add services/web/compose/stage/sami\.yaml"):
        resolve(files, "web", "compose", "stage")


def test_folder_without_manifest_names_the_file_to_add(files: Files) -> None:
    del files[f"{WEB}/sami.yaml"]
    with pytest.raises(ManifestNotFound, match=rf"add {WEB}/sami\.yaml"):
        resolve(files, "web", None, "stage")


def test_same_environment_under_two_types_requires_the_type(files: Files) -> None:
    for path in [p for p in files if p.startswith(WEB + "/")]:
        files[path.replace("/swarm/", "/compose/")] = files[path].replace(
            b"type: swarm", b"type: compose"
        )
    with pytest.raises(AmbiguousDeploymentType) as caught:
        resolve(files, "web", None, "stage")
    assert "compose, swarm" in str(caught.value)
    assert "name the deployment type" in str(caught.value)
    assert resolve(files, "web", "compose", "stage").deployment_type == "compose"
    assert resolve(files, "web", "swarm", "stage").deployment_type == "swarm"


def test_invalid_manifest_carries_its_problems(files: Files) -> None:
    files[f"{WEB}/sami.yaml"] = WEB_MANIFEST.replace("  - web\n", "  - wbe\n").encode()
    with pytest.raises(InvalidManifest) as caught:
        resolve(files, "web", None, "stage")
    assert [p.code for p in caught.value.problems] == ["unknown-image-service"]
    assert f"{WEB}/sami.yaml:7" in str(caught.value)
    assert all(p.is_error for p in caught.value.problems)


def test_errors_elsewhere_do_not_block_a_valid_service(files: Files) -> None:
    files[f"{JOBS}/sami.yaml"] = b"version: v0\n"
    files["services/bad_name/swarm/stage/sami.yaml"] = b"{}"
    assert resolve(files, "web", None, "stage").service == "web"


def test_prod_and_production_together_are_refused(files: Files) -> None:
    files["services/site/static_file/prod/sami.yaml"] = files[f"{SITE}/sami.yaml"]
    with pytest.raises(InvalidManifest, match="same environment"):
        resolve(files, "site", None, "production")


def test_k8s_is_refused_as_not_supported(files: Files) -> None:
    files["services/api/k8s/stage/sami.yaml"] = b"version: v1beta\nservice_name: api\ntype: k8s\n"
    with pytest.raises(NotSupported) as caught:
        resolve(files, "api", None, "stage")
    message = str(caught.value)
    assert "type k8s is not yet supported" in message
    assert "Kubernetes executor" in message


def test_bad_arguments_raise_value_error(files: Files) -> None:
    with pytest.raises(ValueError, match="unknown environment"):
        resolve(files, "web", None, "staging")
    with pytest.raises(ValueError, match="unknown deployment type"):
        resolve(files, "web", "swam", "stage")
    with pytest.raises(ValueError, match="invalid service name"):
        resolve(files, "../web", None, "stage")


def test_all_errors_share_a_base_class() -> None:
    for cls in (ManifestNotFound, AmbiguousDeploymentType, InvalidManifest, NotSupported):
        assert issubclass(cls, ManifestError)


def test_default_stack_names() -> None:
    assert default_stack_name("web", "stage") == "stage_web"
    assert default_stack_name("web", "prod") == "production_web"
    assert default_stack_name("web", "pull_request", 7) == "pr-7_web"
    with pytest.raises(ValueError):
        default_stack_name("web", "stage", 7)

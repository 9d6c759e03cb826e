"""The artifact catalog: what CI built, immutable once registered, identified by digest."""

from __future__ import annotations

from sami_common.imageref import ImageRef, InvalidImageRef, parse_image_ref
from sami_control.core import authz, paging, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.ids import new_id
from sami_control.core.model import Artifact, ArtifactKind, Deployment, Principal
from sami_control.core.requests import ArtifactInput
from sami_control.core.store import Tx
from sami_manifests import ARTIFACT_KIND_OF_TYPE, artifact_fits

# Artifacts kept in memory (immutable, so never stale).
ARTIFACT_CACHE = 4096


class Artifacts:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Artifacts never change once registered: kept by id and by each ref resolved to
        # them, instead of a read per response, per assignment and per CreateDeployment.
        self._cache: dict[str, Artifact] = {}

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited(
        "artifact.register",
        lambda self, who, req: Subject(
            who, f"{req.artifact_name} {validation.without_credentials(req.ref)}"
        ),
    )
    async def register(self, who: Principal, req: ArtifactInput) -> tuple[Artifact, bool]:
        """(the artifact, whether it is new): registering the same name and digest again
        returns the one stored."""
        authz.require(who, Action.REGISTER_ARTIFACT)
        name = validation.artifact_name("artifact.artifact_name", req.artifact_name)
        authz.require_artifact_scope(who, name)
        try:
            kind = ArtifactKind(req.kind)
        except ValueError:
            raise InvalidArgument(
                "artifact.kind", "must be one of image, static_file, module"
            ) from None
        ref, tags = req.ref, list(req.tags)
        if kind is ArtifactKind.IMAGE:
            image = validation.image_ref("artifact.ref", req.ref)
            digest = validation.digest("artifact.digest", req.digest or image.digest)
            if digest != image.digest:
                raise InvalidArgument("artifact.digest", "does not match the digest in ref")
            ref, tags = _pinned(image, tags)
        else:
            digest = validation.digest("artifact.digest", req.digest)
            if req.ref.startswith(("http://", "https://")):
                validation.url("artifact.ref", req.ref)
            else:
                ref, tags = _pinned(validation.image_ref("artifact.ref", req.ref), tags)
        art = Artifact(
            id=new_id("art"),
            artifact_name=name,
            kind=kind,
            ref=ref,
            digest=digest,
            tags=validation.tags("artifact.tags", tags),
            git_repo=validation.text("artifact.provenance.git_repo", req.git_repo, 500),
            git_commit=validation.commit("artifact.provenance.git_commit", req.git_commit),
            ci_run_url=validation.url("artifact.provenance.ci_run_url", req.ci_run_url)
            if req.ci_run_url
            else "",
            labels=validation.labels("artifact.labels", req.labels),
            created_at=self.ctx.clock(),
            created_by=who.name,
        )
        async with self.ctx.store.tx() as tx:
            existing = await tx.find_artifact(name, digest)
            if existing is not None:
                if not _same_ref(existing.ref, art.ref) or existing.kind != art.kind:
                    raise AlreadyExists(
                        f"artifact {name}@{digest} is already registered with ref "
                        f"{existing.ref}; an artifact is immutable"
                    )
                return existing, False
            await tx.insert_artifact(art)
            await self.audit.ok(tx, who, "artifact.register", f"{name}@{digest}", detail=art.id)
        return art, True

    async def get(self, who: Principal, name: str) -> Artifact:
        authz.require(who, Action.READ)
        async with self.ctx.store.tx() as tx:
            return await self.resolve(tx, name, "name")

    async def list(
        self, who: Principal, artifact_name: str, page_size: int, page_token: str
    ) -> tuple[list[Artifact], str]:
        authz.require(who, Action.READ)
        if artifact_name:
            validation.artifact_name("artifact_name", artifact_name)
        before, limit = paging.parse_page(page_token, page_size)
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_artifacts(artifact_name, before, limit + 1)
        page, nxt = paging.cut(rows, limit, lambda row: row[0])
        return [a for _, a in page], nxt

    async def resolve(self, tx: Tx, ref: str, field_: str) -> Artifact:
        """An artifact by id, `artifacts/{id}`, digest-pinned ref, or `name@sha256:…`."""
        if not ref:
            raise InvalidArgument(field_, "artifact is required (an id, or a ref pinned by digest)")
        validation.text(field_, ref, limit=validation.MAX_REF)
        art = self._cache.get(ref)
        if art is not None:
            return art
        ident = ref.removeprefix("artifacts/")
        if ident.startswith("art_"):
            art = await tx.get_artifact(ident)
        elif "@" in ref:
            # NAME@digest or the image's own reference, with or without a tag
            # (`repo:tag@sha256:…` as `docker build` prints it).
            image = validation.image_ref(field_, ref)
            art = await tx.find_artifact(image.repository, image.digest)
            if art is None:
                matches = [
                    a
                    for a in await tx.find_artifacts_by_digest(image.digest)
                    if _names_image(a, image)
                ]
                art = matches[0] if matches else None
        else:
            raise InvalidArgument(
                field_, f"{ref!r} is neither an artifact id nor a reference pinned by digest"
            )
        if art is None:
            raise NotFound(
                f"artifact {ref!r} is not registered; register it first with "
                "`sami artifact register NAME --ref REPO@sha256:...`"
            )
        self._remember(ref, art)
        return art

    @staticmethod
    def check_fits(art: Artifact, deployment_type: str, where: str) -> None:
        """Refuse to put `art` on a deployment of a type that cannot run it (an archive URL
        on a Swarm service, an image unpacked as a site): it would be accepted, and even
        succeed in a dry run, then become a rollback target."""
        kind = art.kind.name.lower()
        if not artifact_fits(deployment_type, kind):
            expected = ARTIFACT_KIND_OF_TYPE[deployment_type]
            raise FailedPrecondition(
                f"artifact {art.artifact_name}@{art.digest} is {_a(kind)} artifact, but {where} "
                f"is a {deployment_type} deployment, which deploys {expected} artifacts: "
                f"deploy an artifact registered with --kind {expected}"
            )

    async def by_id(self, tx: Tx, artifact_id: str) -> Artifact | None:
        art = self._cache.get(artifact_id)
        if art is None:
            art = await tx.get_artifact(artifact_id)
            if art is not None:
                self._remember(artifact_id, art)
        return art

    async def of(self, d: Deployment) -> Artifact | None:
        """The artifact a deployment puts in place (for answers); None only for the teardown
        of an orphan preview Sami had no record of."""
        if not d.artifact_id:
            return None
        art = self._cache.get(d.artifact_id)
        if art is None:
            async with self.ctx.store.tx() as tx:
                art = await self.by_id(tx, d.artifact_id)
        return art

    def _remember(self, key: str, art: Artifact) -> None:
        """Keep `art` under `key` (its id, or a ref resolved to it) once the transaction
        that read it committed: one rolled back may have read an artifact it registered."""

        def keep() -> None:
            if len(self._cache) >= ARTIFACT_CACHE:
                self._cache.clear()
            self._cache[key] = art

        self.ctx.store.after_commit(keep)


def _pinned(image: ImageRef, tags: list[str]) -> tuple[str, list[str]]:
    """The reference Sami stores (`repository@digest`, see sami_common.imageref) and the
    tags, with the reference's own tag among them: it says which build this was."""
    if image.tag and image.tag not in tags:
        tags = [*tags, image.tag]
    return image.pinned(), tags


def _names_image(art: Artifact, image: ImageRef) -> bool:
    """Whether `art`'s reference is `image` (tags aside; `nginx` is docker.io/library/nginx)."""
    try:
        return parse_image_ref(art.ref).same_image(image)
    except InvalidImageRef:
        return False  # a URL: static files are named by NAME@digest


def _same_ref(stored: str, ref: str) -> bool:
    """Whether a stored reference (one registered before references were normalised may
    keep its tag) and a new one name the same thing."""
    if stored == ref:
        return True
    try:
        return parse_image_ref(stored).same_image(parse_image_ref(ref))
    except InvalidImageRef:
        return False


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"

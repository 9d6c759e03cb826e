"""Manifest revisions: validated again on the server, stored immutably, content-addressed,
and resolved when a deployment is created.

Resolution is cached per (revision, service, type, environment): revisions never change, so
the cache never needs invalidating, and a burst of deployments parses each sami.yaml once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import sami_manifests as manifests
from sami_control.core import authz, paging, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from sami_control.core.model import ManifestRevision, Principal, Role
from sami_control.core.store import Tx

CACHE_LIMIT = 4096
# Folders' files kept for assignments (a few KB each).
FOLDER_CACHE_LIMIT = 256
# Revisions whose file listing (paths, hashes, sizes) is kept.
LISTING_CACHE_LIMIT = 16


def revision_id(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return h.hexdigest()


def entry_of(m: manifests.ResolvedManifest) -> dict[str, object]:
    """A resolved manifest as stored with its revision (the fields of sami.v1.ManifestEntry)."""
    return {
        "service": m.service,
        "deployment_type": m.deployment_type,
        "environment": m.environment,
        "folder": m.folder + "/",
        "pr_deploy": m.pr_deploy,
        "stack_files": list(m.stack_files),
        "image_services": list(m.image_services),
        "converge_timeout_seconds": m.converge_timeout,
        "stack_name": m.stack_name or "",
        "cluster": m.cluster or "",
        "static_target_dir": m.static_file.target_dir if m.static_file else "",
        "keep_releases": m.static_file.keep_releases if m.static_file else 0,
        "cron_schedule": m.cron.schedule if m.cron else "",
        "promote_after_seconds": m.promote_after,
        "queue": m.queue,
        "approval_required": m.approval_required,
        "approvers": list(m.approvers),
        "approval_expires_seconds": m.approval_expires if m.approval_required else 0,
        "environment_url": m.environment_url,
        "on_drift": m.on_drift,
    }


@dataclass(frozen=True)
class ManifestFile:
    """A file of a revision as answers show it: the content only for who may read it."""

    path: str
    sha256: str
    size: int
    content: bytes | None = None


def _file(path: str, content: bytes) -> ManifestFile:
    return ManifestFile(path, hashlib.sha256(content).hexdigest(), len(content), content)


def _readable_prefixes(who: Principal) -> list[str] | None:
    """The path prefixes of the files `who` may read (None: every file), or
    PermissionDenied naming what it may do instead."""
    if who.role is Role.ADMIN or (
        who.role is Role.DEPLOYER and not who.services and not who.environments
    ):
        return None
    if who.role is Role.DEPLOYER and who.services:
        return [f"services/{service}/" for service in who.services]
    raise PermissionDenied(
        f"token {who.name!r} ({who.role.value}"
        + (", scoped to environments" if who.role is Role.DEPLOYER else "")
        + ") may list a revision's files by name and hash (without include_files; "
        "`sami manifests show --files`), not read them: files are readable by admins, "
        "unscoped deployers, and deployers scoped to the file's service"
    )


@dataclass(frozen=True)
class Resolved:
    revision: ManifestRevision
    manifest: manifests.ResolvedManifest


def _sync_subject(
    self: ManifestCatalog, who: Principal, commit: str, files: list[tuple[str, bytes]]
) -> Subject:
    return Subject(who, f"commit {commit}" if commit else f"{len(files)} files")


class ManifestCatalog:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[str, str, str, str], manifests.ResolvedManifest] = {}
        self._revisions: dict[str, ManifestRevision] = {}
        self._folders: dict[tuple[str, str], dict[str, bytes]] = {}
        self._listings: dict[str, list[ManifestFile]] = {}

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("manifests.sync", _sync_subject)
    async def sync(
        self, who: Principal, commit: str, files: list[tuple[str, bytes]]
    ) -> tuple[ManifestRevision, bool]:
        authz.require_sync_manifests(who)
        validation.commit("commit", commit)
        by_path: dict[str, bytes] = {}
        for i, (path, data) in enumerate(files):
            if path in by_path:
                raise InvalidArgument(f"files[{i}].path", f"{path!r} appears twice")
            by_path[path] = data
        if not by_path:
            raise InvalidArgument("files", "no files: sync the root of your deployments repo")
        result = manifests.scan(by_path, stack_policy=self.ctx.settings.stack_policy)
        errors = [p for p in result.problems if p.is_error]
        if errors:
            raise InvalidArgument.many(
                [
                    (
                        f"files[{p.file}]" + (f":{p.line}" if p.line else ""),
                        f"{p.message} — {p.hint}" if p.hint else p.message,
                    )
                    for p in errors
                ]
            )
        rid = revision_id(by_path)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            seq = await tx.next_synced_seq()
            existing = await tx.get_manifest_revision(rid)
            if existing is not None:
                await tx.mark_revision_synced(rid, seq)
                existing.synced_seq = seq
                await self._audit(tx, who, rid, "already stored; now current")
                return existing, False
            rev = ManifestRevision(
                id=rid,
                commit=commit,
                created_at=now,
                created_by=who.name,
                file_count=len(by_path),
                entries=[entry_of(m) for m in result.manifests],
                warnings=[p.to_dict() for p in result.problems if not p.is_error],
                synced_seq=seq,
            )
            await tx.insert_manifest_revision(rev, by_path)
            await self._audit(tx, who, rid, f"commit {commit or '-'}, {len(by_path)} files")
        return rev, True

    async def _audit(self, tx: Tx, who: Principal, rid: str, detail: str) -> None:
        await self.audit.ok(tx, who, "manifests.sync", rid, detail=detail)

    async def get(self, who: Principal, name: str) -> tuple[ManifestRevision, bool]:
        """(revision, is_current) by id, `manifestRevisions/{id}` or `current`."""
        authz.require(who, Action.READ)
        ident = name.removeprefix("manifestRevisions/")
        async with self.ctx.store.tx() as tx:
            current = await tx.current_manifest_revision()
            if ident in ("", "current"):
                rev = current
            else:
                validation.text("name", ident, limit=100)
                rev = await tx.get_manifest_revision(ident)
        if rev is None:
            raise NotFound(
                "no manifest revision has been synced yet: run `sami manifests sync DIR`"
                if ident in ("", "current")
                else f"manifest revision {ident!r} does not exist; `sami manifests list`"
            )
        return rev, current is not None and current.id == rev.id

    async def files(self, who: Principal, revision: str, with_content: bool) -> list[ManifestFile]:
        """Every file of a revision by path, hash and size; with `with_content`, the files
        `who` may read, with their content (files can hold what stacks use as secrets):
        an admin or an unscoped deployer (who may sync, i.e. write, them all) reads every
        file, a deployer scoped to services the files of those services' folders."""
        authz.require(who, Action.READ)
        if not with_content:
            return await self._listing(revision)
        prefixes = _readable_prefixes(who)
        async with self.ctx.store.tx() as tx:
            if prefixes is None:
                found = await tx.manifest_files(revision)
            else:
                found = {}
                for prefix in prefixes:
                    found.update(await tx.manifest_files(revision, prefix))
        if not found and prefixes:
            raise PermissionDenied(
                f"token {who.name!r} may read only the files of "
                f"{', '.join(who.services)}, and this revision has none: list the files "
                "by name and hash without include_files (`sami manifests show --files`)"
            )
        return [_file(path, found[path]) for path in sorted(found)]

    async def _listing(self, revision: str) -> list[ManifestFile]:
        """Path, hash and size of every file (kept: a revision never changes)."""
        listing = self._listings.get(revision)
        if listing is None:
            async with self.ctx.store.tx() as tx:
                files = await tx.manifest_files(revision)
            listing = [
                ManifestFile(p, hashlib.sha256(files[p]).hexdigest(), len(files[p]))
                for p in sorted(files)
            ]
            if len(self._listings) >= LISTING_CACHE_LIMIT:
                self._listings.clear()
            self._listings[revision] = listing
        return listing

    async def folder_files(self, tx: Tx, revision: str, folder: str) -> dict[str, bytes]:
        """The files of one manifest folder of a revision, by path relative to the folder:
        what an assignment carries. Kept: a revision never changes (its id is the hash of
        its files), and every delivery of a deployment sends the same."""
        key = (revision, folder)
        files = self._folders.get(key)
        if files is None:
            prefix = folder + "/"
            files = {
                path.removeprefix(prefix): data
                for path, data in (await tx.manifest_files(revision, prefix)).items()
            }
            if len(self._folders) >= FOLDER_CACHE_LIMIT:
                self._folders.clear()
            self._folders[key] = files
        return files

    async def list(
        self, who: Principal, page_size: int, page_token: str
    ) -> tuple[list[ManifestRevision], str, str]:
        """(revisions, most recently synced first; the id of the current one; the next
        page's token)."""
        authz.require(who, Action.READ)
        before, limit = paging.parse_page(page_token, page_size)
        async with self.ctx.store.tx() as tx:
            current = await tx.current_manifest_revision_id()
            rows = await tx.list_manifest_revisions(before, limit + 1)
        page, nxt = paging.cut(rows, limit, lambda r: r.synced_seq)
        return page, current or "", nxt

    async def resolve(
        self, tx: Tx, service: str, deployment_type: str, environment: str
    ) -> Resolved:
        # Only the id is read per deployment; the revision row (every service's entries)
        # is decoded once per revision: revisions never change.
        rev_id = await tx.current_manifest_revision_id()
        rev = self._revisions.get(rev_id) if rev_id else None
        if rev is None and rev_id:
            rev = await tx.get_manifest_revision(rev_id)
            if rev is not None:
                self._revisions = {rev_id: rev}
        if rev is None:
            raise FailedPrecondition(
                "no deployment manifests synced yet: run `sami manifests sync DIR` on your "
                "deployments repo (see docs/manifests.md)"
            )
        key = (rev.id, service, deployment_type, environment)
        m = self._cache.get(key)
        if m is None:
            files = await tx.manifest_files(rev.id, f"services/{service}/")
            try:
                m = manifests.resolve(files, service, deployment_type or None, environment)
            except manifests.ManifestError as exc:
                raise FailedPrecondition(
                    f"{exc.message} (manifest revision {rev.id[:12]}"
                    + (f", commit {rev.commit[:12]}" if rev.commit else "")
                    + "); then `sami manifests sync` again"
                ) from None
            except ValueError as exc:
                raise InvalidArgument("deployment_type", str(exc)) from None
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = m
        return Resolved(rev, m)

"""Every list of the dashboard pages, over HTTP against a live server: the overview by
services, a history by deployments, the audit log by entries; following "Next page" shows
each item once."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urljoin

from sami.v1 import manifest_pb2
from sami_control.web.data import OVERVIEW_PAGE
from sami_control.web.pages import AUDIT_PAGE, HISTORY_PAGE
from tests import samples
from tests.security.conftest import Server, create, md, seed, serve  # noqa: F401
from tests.ui.webclient import WebClient


def _all_pages(web: WebClient, path: str, item: str) -> list[list[str]]:
    """The items (the regex `item`'s group) of each page, following the Next page links."""
    pages = []
    while path:
        body = web.get(path).body
        pages.append(re.findall(item, body))
        nxt = re.search(r'<a href="([^"]+)" rel="next">', body)
        path = urljoin(path, html.unescape(nxt.group(1))) if nxt else ""
    return pages


def _flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


def test_the_overview_history_and_audit_page(serve: Callable[..., Server]) -> None:  # noqa: F811
    srv = serve(ui_listen="127.0.0.1:0")
    assert srv.server.web is not None
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    services = sorted(["web", *(f"svc{i:03d}" for i in range(OVERVIEW_PAGE + 5))])
    s.man.SyncManifests(
        manifest_pb2.SyncManifestsRequest(
            files=[
                manifest_pb2.ManifestFile(path=p, content=c)
                for p, c in samples.repo(services).items()
            ]
        ),
        metadata=md(admin),
    )
    made = [create(s, admin, art) for _ in range(HISTORY_PAGE + 3)]
    # Enough for a second page of the audit log too.
    for _ in range(AUDIT_PAGE - HISTORY_PAGE):
        create(s, admin, art, "production")
    web = WebClient(srv.server.web.port)
    web.sign_in(admin)

    overview = _all_pages(web, "/", r'<th scope="row" class="service">([^<]+)</th>')
    assert [len(p) for p in overview] == [OVERVIEW_PAGE, len(services) - OVERVIEW_PAGE]
    assert _flat(overview) == services

    history = _all_pages(web, "/services/web/stage", r'<a href="/deployments/(dep_[0-9a-f]+)">')
    assert [len(p) for p in history] == [HISTORY_PAGE, 3]
    assert _flat(history) == made[::-1]

    audit = _all_pages(web, "/audit", r'<td data-label="Action">([^<]+)</td>')
    entries = _flat(audit)
    assert all(len(p) <= AUDIT_PAGE for p in audit) and len(audit) >= 2
    assert entries.count("deployment.create") == len(made) + AUDIT_PAGE - HISTORY_PAGE


def test_a_deployment_awaiting_approval_has_a_state_look_of_its_own(
    serve: Callable[..., Server],  # noqa: F811
) -> None:
    srv = serve(ui_listen="127.0.0.1:0")
    assert srv.server.web is not None
    admin = srv.token("admin")
    s, art = seed(srv, admin)
    files = samples.repo()
    files["services/web/swarm/production/sami.yaml"] += b"approval: required\n"
    s.man.SyncManifests(
        manifest_pb2.SyncManifestsRequest(
            files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
        ),
        metadata=md(admin),
    )
    dep = create(s, admin, art, "production")
    web = WebClient(srv.server.web.port)
    web.sign_in(admin)
    body = web.get(f"/deployments/{dep}").body
    assert '<span class="state approval"' in body and "awaiting approval" in body
    assert "awaiting approval by anyone who may deploy to web/production" in body
    assert ".state.approval" in web.get("/static/sami.css").body

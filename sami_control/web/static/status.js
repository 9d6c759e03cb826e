// Keeps the status table live: each `rows` event of the Server-Sent Events stream carries
// every row (their display texts, made by the server), and the table body is rebuilt from
// them. Text goes in through textContent only (never as HTML). The browser reconnects by
// itself; the server then sends the rows of that moment.
"use strict";
(function () {
  const table = document.getElementById("status-table");
  if (!table || !table.dataset.events) {
    return;
  }
  const body = document.getElementById("status-rows");
  const empty = document.getElementById("status-empty");
  const note = document.getElementById("status-live");
  const source = new EventSource(table.dataset.events);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function cell(label, ...children) {
    const td = el("td");
    td.dataset.label = label;
    td.append(...children);
    return td;
  }

  function row(r) {
    const tr = el("tr", r.drift ? "drifted" : "");
    const th = el("th", "", r.service);
    th.scope = "row";
    th.dataset.label = "Service";
    const link = el("a");
    link.href = "/deployments/" + encodeURIComponent(r.deployment_id);
    link.append(el("code", "", r.deployment_id));
    const health = [el("span", "state " + r.health_class, r.health)];
    if (r.stale) {
      health.push(" ", el("span", "stale", r.stale));
    }
    tr.append(
      th,
      cell("Environment", r.target),
      cell("Swarm service", el("code", "", r.swarm_service)),
      cell("Artifact", el("span", "artifact", r.artifact), " ", el("code", "digest", r.digest)),
      cell("Deployed by", link, " ", el("span", "muted", r.deployed)),
      cell("Replicas", r.replicas),
      cell("Health", ...health),
      cell("Drift", r.drift ? el("span", "drift", "drift: " + r.drift) : el("span", "muted", "none")),
    );
    return tr;
  }

  source.addEventListener("rows", function (ev) {
    const rows = JSON.parse(ev.data).rows;
    body.replaceChildren(...rows.map(row));
    empty.hidden = rows.length > 0;
    note.textContent = "What the agents last reported, live (updated " +
      new Date().toLocaleTimeString() + ").";
  });

  for (const name of ["signed-out", "failed"]) {
    source.addEventListener(name, function (ev) {
      source.close();
      note.textContent = name === "signed-out"
        ? "Signed out: sign in again to follow the status."
        : "The status stream failed: " + JSON.parse(ev.data).message + ". Reload the page.";
    });
  }
})();

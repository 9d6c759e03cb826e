// Follows a running deployment: appends each event of the Server-Sent Events stream to the
// timeline and updates the state at the top. Text goes in through textContent only (never
// as HTML). The browser reconnects by itself with Last-Event-ID, and the server resumes
// after that event.
"use strict";
(function () {
  const list = document.getElementById("timeline");
  if (!list || !list.dataset.events) {
    return;
  }
  const status = document.getElementById("live");
  const source = new EventSource(list.dataset.events);

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

  function badge(d) {
    const icon = el("span", "icon", d.state_icon);
    icon.setAttribute("aria-hidden", "true");
    const box = el("span", "state " + d.state_class);
    box.append(icon, " ", el("span", "word", d.state_word));
    return box;
  }

  function showState(d, message) {
    const old = document.getElementById("state");
    if (old) {
      const fresh = badge(d);
      fresh.id = "state";
      old.replaceWith(fresh);
    }
    const line = document.getElementById("status");
    if (line && message !== undefined) {
      line.textContent = message;
    }
  }

  source.addEventListener("deployment", function (ev) {
    const d = JSON.parse(ev.data);
    showState(d, d.status_message);
  });

  source.addEventListener("progress", function (ev) {
    const e = JSON.parse(ev.data);
    const li = el("li", "ev " + e.type.toLowerCase());
    li.dataset.seq = String(e.sequence);
    li.append(el("span", "seq", "#" + e.sequence), " ", el("time", "", e.time), " ");
    if (e.type === "STATE_CHANGED") {
      li.append(badge(e));
      showState(e, e.message);
    } else {
      li.append(el("span", "kind", e.type.toLowerCase()));
    }
    if (e.phase) {
      li.append(" ", el("span", "phase", e.phase));
    }
    li.append(" ", el("span", "msg", e.message));
    list.append(li);
  });

  source.addEventListener("end", function () {
    source.close();
    status.textContent = "finished";
  });

  source.addEventListener("signed-out", function () {
    source.close();
    window.location.assign("/login");
  });

  source.addEventListener("failed", function (ev) {
    source.close();
    status.textContent = JSON.parse(ev.data).message;
  });

  source.addEventListener("open", function () {
    status.textContent = "following live…";
  });

  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (signed out, session ended): the page itself says why.
      window.location.reload();
    } else {
      status.textContent = "connection lost; reconnecting…";
    }
  });
})();

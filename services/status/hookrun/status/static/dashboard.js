// hookrun dashboard: live runs (server-sent events) and the run buttons. Plain JavaScript, no
// build step; loaded from /ui/static under a Content-Security-Policy that allows no inline script.
"use strict";

(function () {
  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function flash(text, kind) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = kind || "";
  }

  // The admin API through the session (see dashboard.admin_api): JSON in, JSON out.
  async function admin(method, path, body) {
    const response = await fetch("/ui/api/v1" + path, {
      method,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let doc = null;
    try {
      doc = await response.json();
    } catch (e) {
      doc = null;
    }
    return { ok: response.ok, status: response.status, doc };
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children || []) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function badge(value) {
    const text = value || "pending";
    return el("span", { class: "badge s-" + text.toLowerCase() }, [text]);
  }

  function when(value) {
    return value ? value.replace("T", " ").slice(0, 19) : "";
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    return ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : ms + " ms";
  }

  // One row of the runs table, built with text nodes only: run fields are never parsed as HTML.
  function runRow(run) {
    const link = el("a", { href: "/ui/runs/" + encodeURIComponent(run.run_id) }, [
      el("code", {}, [run.run_id]),
    ]);
    const first = el("td", {}, [link]);
    if (run.is_test) first.append(" ", el("span", { class: "tag" }, ["test"]));
    let actions = `${run.actions_succeeded} ok / ${run.actions_failed} failed`;
    if (run.action_count !== null) actions += ` of ${run.action_count}`;
    return el("tr", { "data-run-id": run.run_id, "data-received": run.received_at, class: "fresh" }, [
      first,
      el("td", {}, [run.trigger_id]),
      el("td", {}, [badge(run.status || run.info_status)]),
      el("td", {}, [when(run.received_at)]),
      el("td", {}, [duration(run.duration_ms)]),
      el("td", {}, [actions]),
    ]);
  }

  function watchRuns() {
    const live = document.getElementById("live-state");
    const body = document.getElementById("runs");
    if (!live || !body) return;
    const source = new EventSource(live.dataset.stream);
    source.onopen = () => live.classList.add("connected");
    source.onerror = () => live.classList.remove("connected");
    source.addEventListener("run", (event) => {
      const run = JSON.parse(event.data);
      const row = runRow(run);
      const old = body.querySelector(`tr[data-run-id="${CSS.escape(run.run_id)}"]`);
      if (old) {
        old.replaceWith(row);
        return;
      }
      // Newest first: before the first row received earlier; past the last row it is history.
      const rows = Array.from(body.querySelectorAll("tr[data-run-id]"));
      const later = rows.find((r) => (r.dataset.received || "") < run.received_at);
      if (later) body.insertBefore(row, later);
      else if (rows.length === 0) body.append(row);
      else return;
      const empty = document.getElementById("no-runs");
      if (empty) empty.remove();
    });
  }

  // The run page re-reads itself when the run changes and swaps the live part in.
  function watchRun() {
    const live = document.getElementById("live");
    if (!live) return;
    const source = new EventSource(live.dataset.stream);
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        do {
          again = false;
          const response = await fetch(location.href, { credentials: "same-origin" });
          if (!response.ok) return;
          const doc = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = doc.getElementById("live");
          if (fresh) live.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
        } while (again);
      } finally {
        busy = false;
      }
    }
    source.addEventListener("run", refresh);
  }

  // A run not stored yet (opened as soon as it was launched): reload once it is.
  function awaitRun() {
    const awaited = document.getElementById("awaited");
    if (!awaited) return;
    const source = new EventSource(awaited.dataset.stream);
    source.addEventListener("run", () => {
      source.close();
      location.reload();
    });
  }

  async function act(button) {
    const runId = button.closest("[data-run-id]").dataset.runId;
    const action = button.dataset.action;
    let body = {};
    if (action === "replay") {
      const text = document.getElementById("replay-payload").value.trim();
      if (text) {
        try {
          body = { payload: JSON.parse(text) };
        } catch (e) {
          flash("The payload is not valid JSON: " + e.message, "error");
          return;
        }
      }
    } else if (action === "cancel") {
      body = { reason: "canceled from the dashboard" };
    }
    button.disabled = true;
    let answer;
    try {
      answer = await admin("POST", `/runs/${encodeURIComponent(runId)}/${action}`, body);
    } finally {
      button.disabled = false;
    }
    if (!answer.ok) {
      const why = answer.doc && answer.doc.error ? answer.doc.error : "no answer";
      flash(`${action} refused (${answer.status}): ${why}`, "error");
      return;
    }
    if (action === "replay") {
      location.assign("/ui/runs/" + encodeURIComponent(answer.doc.run_id));
      return;
    }
    flash(action === "cancel" ? "Cancel requested." : "Redelivery requested.", "ok");
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  document.addEventListener("DOMContentLoaded", () => {
    watchRuns();
    watchRun();
    awaitRun();
  });
})();

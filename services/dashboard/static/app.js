// Ekiben dashboard: live activity from the gateway's event stream (EventSource, which
// reconnects on its own with Last-Event-ID), copy buttons and confirmations. No polling.
"use strict";

// EventSource needs a listener per `event:` name: the page lists every type there is
// (data-all-types, from the event contract), and these are the fallback.
const EVENT_TYPES = [
  "bento.pushed", "bento.deleted", "model.pushed", "model.deleted",
  "build.requested", "build.started", "build.completed", "build.failed",
  "deployment.requested", "deployment.updated", "deployment.terminated",
  "deployment.deleted", "deployment.status_changed",
];
const MAX_ITEMS = 200;

function matches(pattern, type) {
  if (!pattern) return true;
  return pattern.split(",").some((p) => (p.endsWith("*") ? type.startsWith(p.slice(0, -1)) : p === type));
}

function describe(event) {
  const data = event.data || {};
  const ref = data.artifact || data.bento || data.deployment || {};
  const [kind] = event.type.split(".");
  let label = ref.name ? `${ref.name}${ref.version ? ":" + ref.version : ""}` : event.subject || "";
  let href = null;
  if ((kind === "bento" || kind === "model") && ref.name && ref.version && event.type.endsWith("pushed")) {
    href = `/${kind}s/${encodeURIComponent(ref.name)}/${encodeURIComponent(ref.version)}`;
  } else if (kind === "build" && data.bento) {
    label = `${data.bento.name}:${data.bento.version}`;
    href = `/bentos/${encodeURIComponent(data.bento.name)}/${encodeURIComponent(data.bento.version)}`;
  }
  const actor = data.pushed_by || data.deleted_by || data.requested_by || "";
  const status = data.status || data.phase || "";
  return { label, href, actor, status };
}

function renderEvent(event) {
  const item = document.createElement("li");
  item.className = "fresh";
  item.dataset.type = event.type;
  const when = document.createElement("time");
  when.dateTime = event.time || "";
  when.textContent = event.time ? new Date(event.time).toLocaleString() : "";
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = event.type;
  const what = describe(event);
  const subject = document.createElement(what.href ? "a" : "span");
  subject.className = "subject";
  if (what.href) subject.href = what.href;
  subject.textContent = what.label;
  item.append(when, type, subject);
  if (what.status) {
    const status = document.createElement("span");
    status.textContent = what.status;
    item.append(status);
  }
  if (what.actor) {
    const actor = document.createElement("span");
    actor.className = "hint";
    actor.textContent = `by ${what.actor}`;
    item.append(actor);
  }
  return item;
}

// One EventSource per distinct stream: parts of a page that follow the same events (a
// deployment's status row and its Kubernetes events) share a connection, since a browser
// holds only a few open to one host.
const sources = new Map();

function subscribe(params, onEvent, onState, allTypes) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
  const key = `${query}|${allTypes || ""}`;
  let shared = sources.get(key);
  if (!shared) {
    const source = new EventSource(`/live?${query}`);
    shared = { source, events: [], states: [] };
    const handle = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      for (const listener of shared.events) listener(event);
    };
    const names = allTypes ? allTypes.split(",").filter(Boolean) : EVENT_TYPES;
    for (const type of names) source.addEventListener(type, handle);
    source.addEventListener("open", () => { for (const listener of shared.states) listener("live"); });
    source.addEventListener("error", () => {
      const state = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting";
      for (const listener of shared.states) listener(state);
    });
    sources.set(key, shared);
  } else if (shared.source.readyState === EventSource.OPEN) {
    onState("live");
  }
  shared.events.push(onEvent);
  shared.states.push(onState);
  return shared.source;
}

function liveFeed(root) {
  const list = root.querySelector("[data-items]");
  const empty = root.querySelector("[data-empty]");
  const state = root.querySelector("[data-live-state]");
  const types = root.dataset.types || "";
  const seen = new Set();
  subscribe(
    { types, subject: root.dataset.subject || "", replay: root.dataset.replay || "" },
    (event) => {
      if (seen.has(event.id) || !matches(types, event.type)) return;
      seen.add(event.id);
      if (empty) empty.hidden = true;
      list.prepend(renderEvent(event));
      while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
    },
    (s) => {
      state.textContent = s === "live" ? "Live: new activity appears here as it happens."
        : s === "closed" ? "The event stream ended: reload the page to follow again."
        : "Reconnecting to the event stream…";
      root.dataset.state = s;
    },
    root.dataset.allTypes,
  );
}

function liveNotice(root) {
  const text = root.querySelector("[data-text]");
  let count = 0;
  subscribe({ types: root.dataset.types || "" }, (event) => {
    count += 1;
    const what = describe(event);
    text.textContent = count === 1 ? `${event.type}: ${what.label}.` : `${count} changes since this page loaded (latest: ${event.type} ${what.label}).`;
    root.hidden = false;
  }, () => {}, root.dataset.allTypes);
}

// Tables whose rows change in place: a deployment's status, a build's progress.
const BUILD_STATUS = {
  "build.requested": "pending", "build.started": "building",
  "build.completed": "succeeded", "build.failed": "failed",
};

function rowKey(event) {
  const data = event.data || {};
  if (data.deployment) return `${data.deployment.cluster}/${data.deployment.name}`;
  return data.build_id || "";
}

function liveRows(table) {
  subscribe({ types: table.dataset.types || "" }, (event) => {
    const row = [...table.querySelectorAll("tr[data-key]")].find((r) => r.dataset.key === rowKey(event));
    if (!row) return;
    const cell = row.querySelector("[data-field=status]");
    const status = event.type === "deployment.status_changed" ? event.data.status
      : event.type === "deployment.terminated" ? "terminated" : BUILD_STATUS[event.type];
    if (!cell || !status) return;
    cell.textContent = status;
    cell.className = `status ${status}`;
    const replicas = event.data.desired_replicas ? ` (${event.data.ready_replicas}/${event.data.desired_replicas} ready)` : "";
    if (replicas) cell.textContent += replicas;
    row.classList.remove("fresh");
    void row.offsetWidth;  // restart the highlight
    row.classList.add("fresh");
  }, () => {}, document.body.dataset.allTypes);
}

// A deployment's Kubernetes events: drawn again from the dashboard (data-src, the same
// server-rendered section) shortly after each event of the deployment, since its changes
// are what the cluster reports on. A burst of events costs one fetch; nothing polls.
const EVENTS_SETTLE_MS = 1500;

function liveEvents(root) {
  let timer = null;
  let refreshed = 0;
  const refresh = async () => {
    timer = null;
    let response;
    try {
      response = await fetch(root.dataset.src, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    } catch {
      return;  // unreachable for now: the next event of the deployment tries again
    }
    if (!response.ok || response.redirected) return;  // a redirect is the sign-in page
    root.innerHTML = await response.text();
    refreshed += 1;
    root.dataset.refreshed = String(refreshed);
  };
  subscribe({ types: root.dataset.types || "" }, (event) => {
    if (rowKey(event) !== root.dataset.key) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(refresh, EVENTS_SETTLE_MS);
  }, () => {}, document.body.dataset.allTypes);
}

// A build's log: one streamed fetch of /builds/<id>/log (the gateway's log, relayed), which
// sends the lines so far and then each new one until the build ends. Text nodes only: a
// log line is shown as written, never parsed as markup.
async function followLog(root) {
  const out = root.querySelector("code") || root;
  const state = document.querySelector("[data-log-state]");
  const say = (text, s) => {
    if (state) state.textContent = text;
    root.dataset.state = s;
  };
  let lines = 0;
  const append = (text) => {
    if (!text) return;
    const atEnd = root.scrollHeight - root.scrollTop - root.clientHeight < 24;
    out.append(document.createTextNode(text));
    lines += text.split("\n").length - 1;
    root.dataset.lines = String(lines);
    if (atEnd) root.scrollTop = root.scrollHeight;
  };
  say("Reading the log…", "loading");
  let response;
  try {
    response = await fetch(root.dataset.src, { headers: { Accept: "text/plain" }, credentials: "same-origin" });
  } catch {
    say("The log cannot be read (the dashboard is unreachable): reload the page to try again.", "failed");
    return;
  }
  if (!response.ok) {
    const reason = (await response.text().catch(() => "")).trim();
    say(`The log cannot be read: ${reason || response.status}`, "failed");
    return;
  }
  say("Following: new lines appear here as the build writes them.", "following");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch {
      append(decoder.decode());
      say("The log stream broke off: reload the page to follow again.", "broken");
      return;
    }
    if (chunk.done) break;
    append(decoder.decode(chunk.value, { stream: true }));
  }
  append(decoder.decode());
  say(lines ? `The build has ended: all ${lines} lines are shown.` : "The build has ended and wrote no log lines.", "ended");
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-build-log]").forEach(followLog);
  document.querySelectorAll("[data-live-rows]").forEach(liveRows);
  document.querySelectorAll("[data-live-events]").forEach(liveEvents);
  document.querySelectorAll("[data-live-feed]").forEach(liveFeed);
  document.querySelectorAll("[data-live-notice]").forEach(liveNotice);
  document.querySelectorAll("[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const target = document.querySelector(button.dataset.copy);
      const value = target.value !== undefined ? target.value : target.textContent;
      try {
        await navigator.clipboard.writeText(value);
        button.textContent = "Copied";
      } catch {
        if (target.select) target.select();
        button.textContent = "Press Ctrl+C to copy";
      }
    });
  });
  // A deploy takes a moment at the gateway (the bento is looked up, the revision written):
  // say so, and keep a second click from sending it twice.
  document.querySelectorAll("form[data-deploy-form]").forEach((form) => {
    form.addEventListener("submit", () => {
      const progress = form.querySelector("[data-progress]");
      if (progress) progress.hidden = false;
      form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; });
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  });
});

// devaipod web UI: actions through the JSON API, live updates from the event bus.
// No framework, no inline script (the Content-Security-Policy forbids it).
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

function formBody(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox" && el.dataset.collect !== undefined) {
      // A group of checkboxes: the numbers of those ticked (an empty list when none is).
      body[el.name] = body[el.name] || [];
      if (el.checked) body[el.name].push(Number(el.value));
    } else if (el.type === "checkbox") body[el.name] = el.checked;
    else if (el.type === "number") { if (el.value !== "") body[el.name] = Number(el.value); }
    else if (el.dataset.list !== undefined) {
      // A list field: its words, left out when there are none.
      const items = el.value.split(/[\s,]+/).filter(Boolean);
      if (items.length) body[el.name] = items;
    } else if (el.value !== "") body[el.name] = el.value;
  }
  return body;
}

async function errorOf(resp) {
  try { const j = await resp.json(); return j.error || resp.statusText; } catch (_) { return resp.statusText; }
}

// A section the person is typing in is left alone until they are done (the next event
// re-renders it).
function busy(section) {
  const active = document.activeElement;
  if (active && section.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
  return $$("textarea", section).some((t) => t.value !== t.defaultValue);
}

// Re-renders every section marked data-fragment (from the server, with the same code);
// folded-out <details> with an id stay open.
let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    for (const section of $$("[data-fragment]")) {
      if (busy(section)) continue;
      try {
        const resp = await fetch(section.dataset.fragment, { headers: { accept: "text/html" } });
        if (!resp.ok || busy(section)) continue;
        const open = $$("details[open][id]", section).map((d) => d.id);
        section.innerHTML = await resp.text();
        for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
      } catch (_) { /* the next event retries */ }
    }
  }, 250);
}

async function createWorkspace(form) {
  const progress = $(".progress", form);
  progress.textContent = "";
  const resp = await fetch(form.dataset.api, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(formBody(form)),
  });
  if (!resp.ok) throw new Error(await errorOf(resp));
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      if (msg.progress) { const li = document.createElement("li"); li.textContent = msg.progress; progress.appendChild(li); }
      if (msg.error) throw new Error(msg.error);
      if (msg.result) {
        // The daemon started the first task (the one given, or a GitHub issue's).
        const href = "/workspaces/" + encodeURIComponent(msg.result.name);
        if (msg.result.first_task_error) {
          // The workspace is there; its first task is not: say so, and link the workspace.
          const li = document.createElement("li");
          const a = document.createElement("a");
          a.href = href; a.textContent = "open " + msg.result.name;
          li.append(msg.result.first_task_error + " — ", a);
          progress.appendChild(li);
          return;
        }
        location.href = href;
        return;
      }
    }
  }
  throw new Error("the daemon ended the answer early");
}

async function apiAction(form) {
  const method = form.dataset.method || "POST";
  const body = method === "DELETE" ? undefined : JSON.stringify(formBody(form));
  const resp = await fetch(form.dataset.api, { method, headers: { "content-type": "application/json" }, body });
  if (!resp.ok) throw new Error(await errorOf(resp));
  if (form.dataset.then) { location.href = form.dataset.then; return; }
  if (form.dataset.kind === "run-task") {
    // Given to several candidate agents, the answer is a proposal set: show it.
    const answer = await resp.json().catch(() => ({}));
    if (typeof answer.id === "string" && answer.id.startsWith("s-")) {
      location.href = "/sets/" + encodeURIComponent(answer.id);
      return;
    }
  }
  for (const t of $$("textarea", form)) t.value = "";
  refreshSoon();
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (!form.dataset || !form.dataset.api) return;
  ev.preventDefault();
  if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
  const err = $(".error", form) || $(".error");
  if (err) err.textContent = "";
  const buttons = $$("button", form);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    if (form.dataset.kind === "create-workspace") await createWorkspace(form);
    else await apiAction(form);
  } catch (e) {
    if (err) err.textContent = e.message; else alert(e.message);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
});

// Live updates: the same event bus as the CLI and MCP, over server-sent events.
const KINDS = ["state", "tool", "error", "proposal", "text", "workspace", "audit", "gator", "scopes", "message", "set"];
function follow(url) {
  const live = $("#live");
  const es = new EventSource(url);
  const onEvent = (ev) => {
    let e; try { e = JSON.parse(ev.data); } catch (_) { return; }
    if (live) {
      const first = $("li.muted", live); if (first) first.remove();
      const li = document.createElement("li");
      li.className = e.kind;
      const time = new Date().toLocaleTimeString();
      li.textContent = `${time} ${e.task_id || ""} ${e.kind}: ${e.message}`;
      live.appendChild(li);
      live.scrollTop = live.scrollHeight;
    }
    refreshSoon();
  };
  for (const k of KINDS) es.addEventListener(k, onEvent);
}

const events = $("[data-events]");
if (events) follow(events.dataset.events);

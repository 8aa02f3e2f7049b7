// devaipod's shell around an agent's UI: keeps the bar's open proposals current.
"use strict";
(function () {
  const bar = document.querySelector(".devaipod-bar");
  if (!bar) return;
  const ws = bar.dataset.workspace;
  const slot = bar.querySelector(".proposals");
  async function refresh() {
    try {
      const resp = await fetch("/api/v1/proposals?state=open&workspace=" + encodeURIComponent(ws));
      if (!resp.ok) return;
      const list = await resp.json();
      slot.textContent = "Proposals: ";
      if (!list.length) { const s = document.createElement("span"); s.className = "muted"; s.textContent = "none open"; slot.appendChild(s); }
      for (const p of list) {
        const a = document.createElement("a");
        a.href = "/proposals/" + encodeURIComponent(p.id);
        a.textContent = p.id;
        slot.appendChild(a);
        slot.appendChild(document.createTextNode(" "));
      }
    } catch (_) { /* next event retries */ }
  }
  const es = new EventSource("/api/v1/events?workspace=" + encodeURIComponent(ws));
  es.addEventListener("proposal", refresh);
  es.addEventListener("state", refresh);
})();

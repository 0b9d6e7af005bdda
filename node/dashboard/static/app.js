/* The dashboard: reads the admin API with the session cookie (reads only), renders with
   textContent (a peer's name is the peer's to choose: never parsed as HTML), and refreshes
   on each event of the node's event stream, or by polling when the node has none. */
"use strict";
(function () {
  const POLL_MS = 2000;          /* without the event stream */
  const SAFETY_POLL_MS = 5000;   /* with it: our own payments raise no event; received ones
                                    are aggregated per interval */
  const MAX_CHANNELS = 50;       /* details and usage fetched for the newest 50 */
  const $ = id => document.getElementById(id);
  let busy = false, again = false, last = {details: [], escrows: [], key: ""};

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) {
      e.appendChild(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    }
    return e;
  }

  function money(m) { return m ? `${m.amount} ${m.currency}` : "—"; }
  function shortId(id) { return id.slice(0, 12) + "…"; }

  function closesIn(ms) {
    /* "closes in 3 h 12 min": whole minutes, rounded down; days past 48 h */
    if (ms <= 0) return "closed";
    const min = Math.floor(ms / 60000), h = Math.floor(min / 60), d = Math.floor(h / 24);
    if (h >= 48) return `closes in ${d} d ${h % 24} h`;
    if (h >= 1) return `closes in ${h} h ${min % 60} min`;
    if (min >= 1) return `closes in ${min} min`;
    return "closes in less than a minute";
  }

  async function get(path) {
    const r = await fetch(path, {credentials: "same-origin",
                                 headers: {Accept: "application/json"}});
    if (r.status === 401) { window.location.assign("/dashboard/login"); throw new Error("signed out"); }
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  }

  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  function renderChannels(details, names) {
    fill($("channels").tBodies[0], details.map(d => {
      const cap = d.deposit ? (parseFloat(d.deposit.ours.amount) + parseFloat(d.deposit.peer.amount))
        .toFixed(d.deposit.ours.amount.split(".")[1]?.length || 0) + " " + d.currency : "—";
      return el("tr", {"data-channel": d.id},
        el("td", {class: "id", title: d.id}, shortId(d.id)),
        el("td", {title: d.peer}, names[d.peer] || shortId(d.peer)),
        el("td", {}, d.role),
        el("td", {}, el("span", {class: `phase ${d.phase}`}, d.phase)),
        el("td", {class: "num balance"}, money(d.balance)),
        el("td", {class: "num"}, cap),
        el("td", {class: "num"}, money(d.sent)),
        el("td", {class: "num"}, money(d.received)));
    }));
    $("no-channels").hidden = details.length > 0;
  }

  function renderSettlements(details) {
    const rows = [];
    for (const d of details) {
      for (const s of d.settlement || []) {
        rows.push(el("tr", {},
          el("td", {class: "id", title: d.id}, shortId(d.id)),
          el("td", {}, s.purpose), el("td", {}, s.party),
          el("td", {class: "num"}, money(s.amount)),
          el("td", {class: "id"}, s.reference || ""),
          el("td", {}, s.status + (s.reason ? ` (${s.reason})` : ""))));
      }
      // payouts at checkpoints (and the close's), as the arbiter told their outcome
      for (const s of d.settlements || []) {
        if (!s.checkpoint) continue;  // the close's payout is a transfer row above
        const told = s.status + (s.reason ? ` (${s.reason})` : "") +
          (s.attempt ? `, attempt ${s.attempt + 1}` : "");
        rows.push(el("tr", {},
          el("td", {class: "id", title: d.id}, shortId(d.id)),
          el("td", {}, `checkpoint #${s.checkpoint}`), el("td", {}, s.party),
          el("td", {class: "num"}, money(s.amount)),
          el("td", {class: "id"}, s.reference || ""),
          el("td", {}, told)));
      }
    }
    fill($("settlements").tBodies[0], rows);
    $("no-settlements").hidden = rows.length > 0;
  }

  function renderDisputes() {
    const now = Date.now(), items = [];
    for (const d of last.details) {
      if (d.dispute_deadline) {
        items.push(el("li", {"data-channel": d.id}, `${shortId(d.id)} `,
          el("strong", {}, closesIn(Date.parse(d.dispute_deadline) - now))));
      }
    }
    for (const e of last.escrows) {
      if (e.deadline_ms != null && e.phase === "dispute") {
        items.push(el("li", {"data-channel": e.id}, `${shortId(e.id)} `,
          el("strong", {}, closesIn(e.deadline_ms - now))));
      }
    }
    $("disputes").replaceChildren(...items);
    $("no-disputes").hidden = items.length > 0;
  }

  function renderUsage(pages) {
    /* per tariff unit, per hour: the sum over channels of what was sent and received */
    const units = {};
    for (const page of pages) {
      for (const it of page.items) {
        const q = parseFloat(it.quantity);
        if (!Number.isFinite(q)) continue;
        const byHour = units[it.unit] = units[it.unit] || {};
        const p = byHour[it.bucket_ms] = byHour[it.bucket_ms] || {t: it.bucket_ms, sent: 0, received: 0};
        p[it.direction] += q;
      }
    }
    const figures = Object.keys(units).sort().map(unit => {
      const points = Object.values(units[unit]).sort((a, b) => a.t - b.t).slice(-24);
      return el("figure", {"data-unit": unit}, window.meterlineChart.bars(points, unit),
                el("figcaption", {}, `${unit} — sent (blue), received (violet), last 24 h`));
    });
    $("usage").replaceChildren(...figures);
    if (!figures.length) $("usage").appendChild(el("p", {class: "empty"}, "No usage yet."));
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const status = await get("/api/status");
      $("node-name").textContent = status.name;
      $("node-meta").textContent = `${status.role} · ${shortId(status.node_id)} · bank ${status.bank.rail}`;
      if (status.role === "arbiter") {
        $("channels-section").hidden = true;
        $("usage-section").hidden = true;
        $("settlements-section").hidden = true;
        $("escrows-section").hidden = false;
        last.escrows = (await get("/api/escrows")).escrows;
        fill($("escrows").tBodies[0], last.escrows.map(e => el("tr", {"data-channel": e.id},
          el("td", {class: "id", title: e.id}, shortId(e.id)),
          el("td", {}, el("span", {class: `phase ${e.phase}`}, e.phase)),
          el("td", {class: "num"}, money(e.deposited.opener)),
          el("td", {class: "num"}, money(e.deposited.peer)),
          el("td", {}, e.deadline_ms != null && e.phase === "dispute" ? closesIn(e.deadline_ms - Date.now()) : "—"))));
      } else {
        const [peers, list] = await Promise.all([get("/api/peers"), get("/api/channels")]);
        const names = {};
        for (const p of peers.peers) names[p.node_id] = p.name;
        const ids = list.channels.slice(0, MAX_CHANNELS).map(c => c.id);
        const details = await Promise.all(ids.map(id => get(`/api/channels/${id}`)));
        const pages = await Promise.all(ids.map(id => get(`/api/channels/${id}/payments?limit=500`)));
        last.details = details;
        const key = JSON.stringify([details, names, pages.map(p => p.items)]);
        if (key !== last.key) {  /* unchanged data is not redrawn (no flicker, selection kept) */
          last.key = key;
          renderChannels(details, names);
          renderSettlements(details);
          renderUsage(pages);
        }
      }
      renderDisputes();
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      $("error").hidden = true;
    } catch (err) {
      $("error").textContent = "could not refresh: " + err.message;
      $("error").hidden = false;
    } finally {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 0); }
    }
  }

  let timer = null, soon = null;
  function poll(ms) { if (timer) clearInterval(timer); timer = setInterval(refresh, ms); }
  let events = 0;
  function refreshSoon() { events += 1; if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, 200); }

  async function follow() {
    /* the node's event stream: refresh on every event; polling stays as the fallback */
    let types = [];
    try { types = (await get("/api/events/types")).types.map(t => t.type); } catch (_) { types = []; }
    const source = new EventSource("/api/events");
    source.onopen = () => { $("live").textContent = "live (event stream)"; $("live").classList.add("on"); poll(SAFETY_POLL_MS); };
    source.onmessage = refreshSoon;
    for (const t of types) source.addEventListener(t, refreshSoon);
    source.onerror = () => { $("live").textContent = "live (polling; event stream reconnecting)"; poll(POLL_MS); };
  }

  window.meterline = {closesIn, refresh, events: () => events};
  document.addEventListener("DOMContentLoaded", () => {
    refresh();
    poll(POLL_MS);
    if (document.body.dataset.events === "1") follow();
    else { $("live").textContent = "live (polling every 2 s)"; $("live").classList.add("on"); }
    setInterval(renderDisputes, 30000);
  });
}());

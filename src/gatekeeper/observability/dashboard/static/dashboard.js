// The traffic dashboard: renders each snapshot pushed by /dashboard/events.
"use strict";

(() => {
  const { el, num, ms, setText, replace, pairs } = GK;
  // Used when a pool does not list its strategies itself.
  const STRATEGIES = ["round_robin", "least_connections", "weighted", "ip_hash", "adaptive"];
  const TOKEN_KEY = "gatekeeper.adminToken";
  // The access log's termination codes (docs/observability.md).
  const TERMS = {
    "--": "forwarded", "C-": "cached", "CS": "stale from cache", "B-": "built-in API",
    RN: "no route", RD: "denied", RA: "unauthenticated", RL: "rate limited",
    RW: "waiting room", QF: "queue full", QT: "queue timeout", BO: "breaker open",
    UN: "no healthy upstream", UT: "upstream timeout", UC: "upstream error",
    CA: "client aborted", IE: "internal error",
  };

  function renderTraffic(view) {
    const t = view.traffic || {};
    setText("rps", num(t.rps));
    setText("allowed-rps", num(t.allowed_rps));
    setText("limited-rps", num(t.limited_rps));
    setText("error-rps", num(t.error_rps));
    setText("p50", ms(t.p50_ms));
    setText("p95", ms(t.p95_ms));
    setText("p99", ms(t.p99_ms));
    setText("requests-total", num((view.totals || {}).requests));
  }

  function renderChart(series) {
    const svg = document.getElementById("chart");
    if (!svg || !series) return;
    const ns = "http://www.w3.org/2000/svg";
    const max = Math.max(1, ...series.map((p) => p.req));
    const width = 600 / Math.max(1, series.length);
    const bars = [];
    series.forEach((point, i) => {
      const allowed = point.req - point.lim;
      const hAllowed = (allowed / max) * 110;
      const hLimited = (point.lim / max) * 110;
      for (const [h, y, cls] of [[hAllowed, 120 - hAllowed, "ok"],
                                  [hLimited, 120 - hAllowed - hLimited, "bad"]]) {
        if (h <= 0) continue;
        const rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", String(i * width + 0.5));
        rect.setAttribute("y", String(y));
        rect.setAttribute("width", String(Math.max(1, width - 1)));
        rect.setAttribute("height", String(h));
        rect.setAttribute("class", cls);
        bars.push(rect);
      }
    });
    svg.replaceChildren(...bars);
    const last = series[series.length - 1] || { req: 0, lim: 0 };
    svg.setAttribute("aria-label",
      `Peak ${max} requests per second; last second ${last.req} requests, ${last.lim} limited.`);
  }

  function endpointList(endpoints) {
    const list = Array.isArray(endpoints)
      ? endpoints
      : Object.entries(endpoints || {}).map(([name, value]) => ({ name, ...value }));
    if (!list.length) return el("p", { class: "empty", text: "no endpoints" });
    const rows = list.map((e) => {
      const address = e.address || e.name || (e.host ? `${e.host}:${e.port}` : "?");
      const healthy = e.healthy ?? (e.health ? e.health === "healthy" : undefined);
      const breaker = e.breaker_state || (typeof e.breaker === "string" ? e.breaker
        : (e.breaker && e.breaker.state)) || "closed";
      const health = healthy === undefined ? el("span", { class: "badge", text: "unknown" })
        : el("span", { class: `badge ${healthy ? "up" : "down"}`,
                       text: healthy ? "healthy" : "down" });
      const br = el("span", { class: `badge ${breaker === "closed" ? "up" : "warn"}`,
                              text: `breaker ${breaker}` });
      const ejected = e.ejected ? el("span", { class: "badge down", text: "ejected" }) : null;
      return el("tr", {},
        el("td", { text: address }), el("td", {}, health, " ", ejected), el("td", {}, br),
        el("td", { text: num(e.in_flight ?? e.active ?? null) }),
        el("td", { text: num(e.requests ?? null) }),
        el("td", { text: e.latency_ms === undefined ? "–" : ms(e.latency_ms) }),
        el("td", { text: e.weight ?? "" }));
    });
    return el("div", { class: "table-wrap" }, el("table", { class: "data" },
      el("thead", {}, el("tr", {},
        ...["Endpoint", "Health", "Breaker", "In flight", "Requests", "Latency", "Weight"]
          .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows)));
  }

  // Pools are built once and then updated in place, so that a strategy being chosen in a menu
  // is not reset by the next snapshot (only a change of the pool's strategy moves the menu).
  const poolViews = new Map();

  function poolView(pool, name) {
    const index = poolViews.size;
    const strategies = pool.strategies || STRATEGIES;
    const selectId = `strategy-${index}`;
    const select = el("select", { id: selectId, name: "strategy", "data-pool": name },
      ...strategies.map((s) => el("option", { value: s, text: s })));
    select.value = pool.strategy;
    const form = el("form", { "data-pool": name, "aria-label": `Strategy of pool ${name}` },
      el("label", { for: selectId, text: "Strategy" }), select,
      el("button", { type: "submit", text: "Apply" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      changeStrategy(name, select.value);
    });
    const badge = el("span", { class: "badge", "data-role": "strategy", text: pool.strategy || "?" });
    const table = el("div", { class: "endpoints" });
    const article = el("article", { class: "pool", "data-pool": name },
      el("h3", {}, `${name} `, badge), form, table);
    return { article, select, badge, table, strategy: pool.strategy };
  }

  function renderPools(pools) {
    if (!pools || !pools.length) return;
    const container = document.getElementById("pools");
    const names = new Set();
    pools.forEach((pool, index) => {
      const name = pool.name || pool.pool || `pool ${index + 1}`;
      names.add(name);
      let view = poolViews.get(name);
      if (!view) {
        view = poolView(pool, name);
        poolViews.set(name, view);
      }
      if (pool.strategy !== view.strategy) {
        view.strategy = pool.strategy;
        view.select.value = pool.strategy;
      }
      if (view.badge.textContent !== pool.strategy) view.badge.textContent = pool.strategy;
      view.table.replaceChildren(endpointList(pool.endpoints));
    });
    for (const [name, view] of poolViews) {
      if (!names.has(name)) {
        view.article.remove();
        poolViews.delete(name);
      }
    }
    const articles = [...poolViews.values()].map((v) => v.article);
    if (articles.some((a, i) => container.children[i] !== a) || container.children.length !== articles.length) {
      container.replaceChildren(...articles);
    }
  }

  async function changeStrategy(pool, strategy) {
    const result = document.getElementById("strategy-result");
    const token = document.getElementById("admin-token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    result.className = "result";
    result.textContent = `Switching ${pool} to ${strategy}…`;
    try {
      const response = await fetch("/change_strategy", {
        method: "POST",
        headers: { "Content-Type": "application/json",
                   ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ pool, strategy }),
      });
      let body = {};
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      if (response.ok) {
        result.className = "result ok";
        result.textContent = `${pool} now uses ${strategy}.`;
      } else {
        result.className = "result bad";
        const why = body.detail || body.error || response.statusText;
        result.textContent = `Refused (${response.status}): ${typeof why === "string" ? why
          : JSON.stringify(why)}`;
      }
    } catch (error) {
      result.className = "result bad";
      result.textContent = `Failed: ${error}`;
    }
  }

  function renderTables(view) {
    const cache = { ...(view.cache || {}) };
    const ratio = cache.hit_ratio;
    delete cache.hit_ratio;
    pairs("cache", { ...cache, "hit ratio": ratio }, (v) =>
      (v === null || v === undefined ? "–" : (v <= 1 && v % 1 ? `${num(v * 100, 1)} %` : num(v))));
    pairs("queues", view.queues);
    const terms = {};
    for (const [code, n] of Object.entries((view.totals || {}).terminations || {})) {
      terms[`${code} ${TERMS[code] || ""}`.trim()] = n;
    }
    pairs("terms", terms);
    const policies = Object.entries(view.policies || {}).map(([name, o]) =>
      el("tr", {}, el("td", { text: name }), el("td", { text: num(o.allowed || 0) }),
        el("td", { text: num(o.limited || 0) })));
    replace("policies", policies.length ? policies
      : [el("tr", {}, el("td", { colspan: 3, class: "empty", text: "none yet" }))]);
    for (const [id, rows] of [["top-keys", view.top_limited_keys], ["top-ips", view.top_limited_ips]]) {
      const trs = (rows || []).map(([key, n]) =>
        el("tr", {}, el("td", { text: key }), el("td", { text: num(n) })));
      replace(id, trs.length ? trs
        : [el("tr", {}, el("td", { colspan: 2, class: "empty", text: "nobody" }))]);
    }
  }

  function renderLog(lines) {
    const rows = (lines || []).slice(0, 30).map((l) =>
      el("tr", {},
        el("td", { text: new Date(l.t * 1000).toLocaleTimeString() }),
        el("td", { class: `st-${String(l.status)[0]}`, text: l.status }),
        el("td", { text: l.term, title: TERMS[l.term] || "" }), el("td", { text: l.method }),
        el("td", { text: l.path }),
        el("td", { text: num(l.ms, 1) }), el("td", { text: l.upstream || "" }),
        el("td", { text: l.policy || "" }), el("td", { text: l.ip })));
    replace("log-lines", rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 9, class: "empty", text: "no requests yet" }))]);
  }

  // Geographic routing (/geo/stats of the replica that serves the page); hidden without it.
  function renderGeo(geo) {
    const section = document.getElementById("geo");
    if (!section) return;
    section.hidden = !geo;
    if (!geo) return;
    const refused = Object.values(geo.refused || {}).reduce((a, b) => a + b, 0);
    const distance = geo.distance_km || {};
    const km = (v) => (v === undefined || v === null ? "–" : `${num(v, 0)} km`);
    setText("geo-requests", num(geo.requests));
    setText("geo-failovers", num(geo.failovers));
    setText("geo-refused", num(refused));
    setText("geo-unresolved", num(geo.unresolved));
    setText("geo-p50", km(distance.p50));
    setText("geo-p95", km(distance.p95));
    const served = geo.by_datacenter || {};
    const failed = geo.failovers_by_datacenter || {};
    const rows = (geo.datacenters || []).map((dc) =>
      el("tr", { "data-datacenter": dc.name },
        el("td", { text: dc.name }), el("td", { text: dc.region }),
        el("td", {}, el("span", { class: `badge ${dc.available ? "up" : "down"}`,
                                   text: dc.available ? "serving" : "no healthy endpoint" })),
        el("td", { text: num(served[dc.name] || 0) }),
        el("td", { text: num(failed[dc.name] || 0) })));
    replace("geo-datacenters", rows);
    pairs("geo-regions", geo.by_region);
    pairs("geo-countries", Object.fromEntries(Object.entries(geo.by_country || {}).slice(0, 8)));
    const db = geo.database || {};
    const error = db.last_error ? ` Last reload refused: ${db.last_error}` : "";
    setText("geo-database",
      `Database ${db.type || "?"} built ${db.built || "?"}, ${num(db.reloads || 0)} reload(s).${error}`);
  }

  // The seed's burst demo: one request, or eight in a row, each answer drawn as a block.
  function burstDemo() {
    const path = document.getElementById("demo-path").textContent.trim();
    const blocks = document.getElementById("burst-blocks");
    const status = document.getElementById("burst-status");
    const buttons = ["burst-one", "burst-eight"].map((id) => document.getElementById(id));
    let countdown = null;
    let sent = 0;

    function startCountdown(seconds) {
      clearInterval(countdown);
      let left = seconds;
      status.textContent = `Limited. The window resets in ${left} s.`;
      countdown = setInterval(() => {
        left -= 1;
        if (left > 0) {
          status.textContent = `Limited. The window resets in ${left} s.`;
          return;
        }
        clearInterval(countdown);
        status.textContent = "Window reset: requests are allowed again.";
        blocks.append(el("li", { class: "sep", text: "reset" }));
      }, 1000);
    }

    async function send(count) {
      buttons.forEach((b) => { b.disabled = true; });
      let retryAfter = 0;
      let remaining = null;
      for (let i = 0; i < count; i += 1) {
        sent += 1;
        let code = "ERR";
        try {
          const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
          code = response.status;
          await response.arrayBuffer();
          remaining = response.headers.get("RateLimit-Remaining")
            ?? response.headers.get("X-RateLimit-Remaining") ?? remaining;
          if (code === 429) {
            retryAfter = Math.max(retryAfter, parseInt(response.headers.get("Retry-After") || "1", 10));
          }
        } catch (_) { /* network error: drawn as ERR */ }
        const ok = typeof code === "number" && code < 400;
        blocks.append(el("li", { class: ok ? "ok" : "bad", "data-status": code,
                                 title: `request ${sent}: ${code}`,
                                 "aria-label": `request ${sent}: ${ok ? "allowed" : "refused"} (${code})`,
                                 text: code }));
      }
      buttons.forEach((b) => { b.disabled = false; });
      if (retryAfter > 0) startCountdown(retryAfter);
      else {
        clearInterval(countdown);
        status.textContent = remaining === null ? "Allowed." : `Allowed. ${remaining} left in this window.`;
      }
    }

    buttons[0].addEventListener("click", () => send(1));
    buttons[1].addEventListener("click", () => send(8));
    document.getElementById("burst-clear").addEventListener("click", () => {
      blocks.replaceChildren();
      status.textContent = "";
    });
  }

  // The flagged clients come from GET /dashboard/abuse (operators: the token if one is typed).
  async function refreshAbuse() {
    const token = document.getElementById("admin-token").value.trim();
    let body = null;
    let status = "";
    try {
      const response = await fetch("/dashboard/abuse", {
        cache: "no-store",
        headers: { Accept: "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      });
      if (response.status === 404) status = "abuse detection is not running";
      else if (!response.ok) status = `not allowed (${response.status}): type the admin token`;
      else body = await response.json();
    } catch (_) { status = "unreachable"; }
    if (body && !body.enabled) status = "abuse detection is disabled";
    setText("abuse-status", status);
    const rows = ((body && body.flagged) || []).slice(0, 50).map((f) =>
      el("tr", {},
        el("td", { text: f.subject }), el("td", { text: f.pattern }),
        el("td", { text: `${num(f.count)} / ${num(f.threshold)}` }),
        el("td", { text: `${num(f.window)} s` }),
        el("td", { text: new Date(f.last_seen * 1000).toLocaleTimeString() }),
        el("td", { text: f.banned_for ? `${num(f.banned_for)} s` : "no" })));
    replace("abuse-flagged", rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "empty", text: "nobody" }))]);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const token = document.getElementById("admin-token");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    burstDemo();
    refreshAbuse();
    setInterval(refreshAbuse, 5000);
    GK.live((view) => {
      renderTraffic(view);
      renderChart(view.series);
      renderPools(view.pools);
      renderGeo(view.geo);
      renderTables(view);
      renderLog(view.recent);
    });
  });
})();

// The waiting-room view: one row per tenant, refreshed by each snapshot.
"use strict";

(() => {
  const { el, num, replace } = GK;

  function eta(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${num(seconds, 0)} s`;
    if (seconds < 5400) return `${num(seconds / 60, 0)} min`;
    return `${num(seconds / 3600, 1)} h`;
  }

  function render(view) {
    const rooms = Object.entries(view.waiting_rooms || {});
    const rows = rooms.map(([tenant, r]) => el("tr", { "data-tenant": tenant },
      el("th", { scope: "row", text: tenant }),
      el("td", { "data-field": "queue_length", text: num(r.queue_length) }),
      el("td", { "data-field": "admission_rate", text: num(r.admission_rate, 2) }),
      el("td", { "data-field": "eta", text: eta(r.eta_seconds) }),
      el("td", { text: num(r.admitted) }),
      el("td", { text: num(r.abandoned) }),
      el("td", { "data-field": "abandon_ratio",
                 text: r.abandon_ratio === null ? "–" : `${num(r.abandon_ratio * 100, 1)} %` }),
      el("td", { text: num(r.tokens_issued) })));
    replace("rooms", rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 8, class: "empty", text: "no waiting-room activity yet" }))]);
  }

  document.addEventListener("DOMContentLoaded", () => GK.live(render));
})();

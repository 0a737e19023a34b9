// Helpers shared by the dashboards. Everything is written with textContent: keys, paths and IPs
// come from clients and must never be interpreted as HTML.
"use strict";

const GK = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const d = digits === undefined ? (Math.abs(value) < 10 && value % 1 ? 1 : 0) : digits;
    return Number(value).toLocaleString("en-US", {
      minimumFractionDigits: d, maximumFractionDigits: d,
    });
  }

  function ms(value) {
    return value === null || value === undefined ? "–" : `${num(value, value < 10 ? 2 : 0)} ms`;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function replace(id, nodes) {
    const node = document.getElementById(id);
    if (node) node.replaceChildren(...nodes);
  }

  function pairs(id, object, format) {
    const entries = Object.entries(object || {});
    if (!entries.length) {
      replace(id, [el("dt", { text: "none yet" }), el("dd", { text: "" })]);
      return;
    }
    const nodes = [];
    for (const [key, value] of entries) {
      nodes.push(el("dt", { text: key }), el("dd", { text: format ? format(value) : num(value) }));
    }
    replace(id, nodes);
  }

  // Subscribe to the snapshot stream; EventSource reconnects by itself after an error.
  function live(onView) {
    const dot = document.getElementById("conn-dot");
    const status = (text, cls) => {
      setText("conn-status", text);
      if (dot) dot.className = `dot ${cls}`;
    };
    const source = new EventSource("/dashboard/events");
    source.addEventListener("snapshot", (event) => {
      const view = JSON.parse(event.data);
      const time = new Date((view.ts || Date.now() / 1000) * 1000).toLocaleTimeString();
      if (view.stale) status(`stale since ${time}`, "stale");
      else status(`live · ${time}`, "live");
      setText("mode", view.mode === "cluster" ? "cluster (Redis)" : "local");
      setText("replicas", String(view.replicas ?? "–"));
      onView(view);
    });
    source.addEventListener("error", () => status("reconnecting…", "stale"));
    return source;
  }

  return { el, num, ms, setText, replace, pairs, live };
})();

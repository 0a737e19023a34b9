/*
 * Gatekeeper waiting room: the browser client. No dependencies, no build step.
 *
 *   const room = new GatekeeperWaitingRoom({ businessId: "demo", onUpdate: (s) => ... });
 *   await room.start("/checkout");   // enqueue (or resume), wait, then go to /checkout
 *
 * Waiting uses Server-Sent Events when the browser has EventSource, else polling at the
 * interval the server advises, backing off on errors and honouring Retry-After on 429.
 * The visitor's id and queue token live in localStorage, so a reload keeps the place.
 * When admitted, the token is stored in the cookie gk_wr_<businessId> (read by the gateway's
 * waiting-room gate) and, with { appendToken: true }, appended to the URL as ?gk_jwt=...
 */
(function (global) {
  "use strict";

  function sleep(ms, signal) {
    return new Promise(function (resolve) {
      var timer = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", function () { clearTimeout(timer); resolve(); });
    });
  }

  function randomId() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    global.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  /** Only same-origin paths: never an open redirect. */
  function safePath(url) {
    return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" && url.charAt(1) !== "\\" ? url : "/";
  }

  function QueueError(status, body, retryAfter) {
    this.name = "QueueError";
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
    this.message = (body && body.detail) || ("HTTP " + status);
  }
  QueueError.prototype = Object.create(Error.prototype);

  function GatekeeperWaitingRoom(options) {
    if (!options || !options.businessId) throw new Error("businessId is required");
    this.businessId = options.businessId;
    this.baseUrl = options.baseUrl || "";
    this.useSSE = options.useSSE !== false && typeof global.EventSource === "function";
    this.appendToken = !!options.appendToken;
    this.onUpdate = options.onUpdate || function () {};
    this.onError = options.onError || function () {};
    this.storage = options.storage || global.localStorage;
    this.key = "gk_wr:" + this.businessId;
    var saved = {};
    try { saved = JSON.parse(this.storage.getItem(this.key) || "{}"); } catch (e) { saved = {}; }
    this.userId = options.userId || saved.userId || randomId();
    this.jwt = saved.userId === this.userId ? saved.jwt || "" : "";
    this.last = null;
    this._save();
  }

  GatekeeperWaitingRoom.prototype._save = function () {
    this.storage.setItem(this.key, JSON.stringify({ userId: this.userId, jwt: this.jwt }));
  };

  GatekeeperWaitingRoom.prototype._request = async function (method, path, headers) {
    var all = { business_id: this.businessId };
    for (var name in headers) all[name] = headers[name];
    var response = await fetch(this.baseUrl + path, { method: method, headers: all, cache: "no-store" });
    var body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      var retry = parseInt(response.headers.get("Retry-After") || "0", 10) || 0;
      throw new QueueError(response.status, body, retry);
    }
    return body;
  };

  /** Take a place in line (or learn the one already held). */
  GatekeeperWaitingRoom.prototype.enqueue = async function () {
    var body = await this._request("POST", "/queue/enqueue", { user_id: this.userId });
    if (body.jwt) { this.jwt = body.jwt; this._save(); }
    this._update({ position: body.position, ready: !!body.ready, eta_seconds: body.eta_seconds,
      eta_range_seconds: body.eta_range_seconds, poll_after_seconds: body.poll_after_seconds });
    return body;
  };

  /** One status read; keeps the renewed token. */
  GatekeeperWaitingRoom.prototype.status = async function () {
    var body = await this._request("GET", "/queue/status", { jwt: this.jwt });
    this._accept(body);
    return body;
  };

  GatekeeperWaitingRoom.prototype._accept = function (body) {
    if (body.jwt_token && !body.warning_msg) { this.jwt = body.jwt_token; this._save(); }
    this._update(body);
  };

  GatekeeperWaitingRoom.prototype._update = function (state) {
    this.last = state;
    try { this.onUpdate(state); } catch (e) { /* the page's problem, not the queue's */ }
  };

  /** Enqueue unless a live token is held; re-enqueue if the place was lost. */
  GatekeeperWaitingRoom.prototype.join = async function () {
    if (this.jwt) {
      try {
        var body = await this.status();
        if (!body.warning_msg) return body;
      } catch (e) {
        if (!(e instanceof QueueError) || e.status !== 401) throw e;
      }
      this.jwt = "";
      this._save();
    }
    var first = await this.enqueue();
    if (!first.jwt && !this.jwt) {
      // Queued under this id elsewhere, token lost: start over under a new id.
      this.userId = randomId();
      first = await this.enqueue();
    }
    return first;
  };

  GatekeeperWaitingRoom.prototype._poll = async function (signal) {
    var failures = 0;
    while (!(signal && signal.aborted)) {
      var wait = ((this.last && this.last.poll_after_seconds) || 2) * 1000;
      try {
        var body = await this.status();
        failures = 0;
        if (body.ready) return this.jwt;
        if (body.warning_msg) { await this.join(); continue; }
      } catch (e) {
        failures += 1;
        this.onError(e);
        if (e instanceof QueueError && e.status === 401) { this.jwt = ""; await this.join(); continue; }
        var backoff = Math.min(30000, 1000 * Math.pow(2, failures));
        wait = e instanceof QueueError && e.retryAfter ? e.retryAfter * 1000 : backoff;
      }
      await sleep(wait * (0.9 + Math.random() * 0.2), signal);
    }
    return null;
  };

  GatekeeperWaitingRoom.prototype._events = function (signal) {
    var self = this;
    return new Promise(function (resolve) {
      var url = self.baseUrl + "/queue/events?business_id=" + encodeURIComponent(self.businessId) +
        "&jwt=" + encodeURIComponent(self.jwt);
      var source = new EventSource(url);
      var done = function (value) { source.close(); resolve(value); };
      if (signal) signal.addEventListener("abort", function () { done(null); });
      source.addEventListener("status", function (event) {
        var body = JSON.parse(event.data);
        self._accept(body);
        if (body.ready) done(self.jwt);
        else if (body.warning_msg) done(false);
      });
      // The server closes the stream after ready; any other failure: fall back to polling.
      source.onerror = function () { if (source.readyState === EventSource.CLOSED || !self.last) done(false); };
      source.addEventListener("error", function (event) { if (event.data) done(false); });
    });
  };

  /** Resolve with the ready token once admitted. */
  GatekeeperWaitingRoom.prototype.waitUntilReady = async function (signal) {
    if (this.last && this.last.ready && this.jwt) return this.jwt;
    if (this.useSSE) {
      var token = await this._events(signal);
      if (token) return token;
      if (signal && signal.aborted) return null;
      if (token === false && this.last && this.last.warning_msg) await this.join();
    }
    return this._poll(signal);
  };

  /** Store the ready token where the gate looks, then go. */
  GatekeeperWaitingRoom.prototype.redirect = function (returnTo) {
    var path = safePath(returnTo);
    var name = "gk_wr_" + this.businessId.replace(/[^A-Za-z0-9_-]/g, "_");
    document.cookie = name + "=" + encodeURIComponent(this.jwt) + "; Path=/; SameSite=Lax";
    if (this.appendToken) path += (path.indexOf("?") === -1 ? "?" : "&") + "gk_jwt=" + encodeURIComponent(this.jwt);
    global.location.assign(path);
  };

  /** Join, wait, redirect: the whole visit. */
  GatekeeperWaitingRoom.prototype.start = async function (returnTo, signal) {
    var first = await this.join();
    if (!(first && first.ready)) await this.waitUntilReady(signal);
    if (signal && signal.aborted) return;
    this.redirect(returnTo);
  };

  GatekeeperWaitingRoom.QueueError = QueueError;
  GatekeeperWaitingRoom.safePath = safePath;
  global.GatekeeperWaitingRoom = GatekeeperWaitingRoom;
})(typeof window !== "undefined" ? window : this);

/* Gatekeeper browser SDK: ask before calling, track what was called, show what is left.
 *
 *   const gk = new Gatekeeper({ apiKey: "gk_...", baseUrl: "" });
 *   const verdict = await gk.check({ endpoint: "/api/orders" });
 *   if (verdict.allowed) { await gk.fetch("/api/orders"); }
 *   gk.renderQuota(document.getElementById("quota"));
 *
 * No dependencies; works in any browser with fetch and Promise. The key travels in the
 * X-API-Key header (never in the URL, where logs and referrers would keep it).
 */
(function (root) {
  "use strict";

  function GatekeeperLimitError(verdict) {
    this.name = "GatekeeperLimitError";
    this.message = verdict.message || "rate limit exceeded";
    this.verdict = verdict;
    this.retryAfter = verdict.retry_after || 0;
  }
  GatekeeperLimitError.prototype = Object.create(Error.prototype);

  function Gatekeeper(options) {
    options = options || {};
    this.baseUrl = (options.baseUrl || "").replace(/\/$/, "");
    this.apiKey = options.apiKey || null;
    this.trackCalls = options.track !== false;
    this.last = null;
    this._listeners = [];
  }

  Gatekeeper.prototype._headers = function () {
    var headers = { "Content-Type": "application/json" };
    if (this.apiKey) headers["X-API-Key"] = this.apiKey;
    return headers;
  };

  Gatekeeper.prototype._remember = function (verdict) {
    this.last = verdict;
    for (var i = 0; i < this._listeners.length; i++) {
      try { this._listeners[i](verdict); } catch (e) { /* a listener must not break calls */ }
    }
    return verdict;
  };

  /** Subscribe to every new verdict (for quota widgets). */
  Gatekeeper.prototype.onChange = function (listener) {
    this._listeners.push(listener);
  };

  /** Ask whether a call may proceed; debits `cost` when it may. Resolves to the verdict. */
  Gatekeeper.prototype.check = function (opts) {
    opts = opts || {};
    var self = this;
    return fetch(this.baseUrl + "/sdk/check", {
      method: "POST",
      headers: this._headers(),
      body: JSON.stringify({ cost: opts.cost || 1, endpoint: opts.endpoint || "" }),
    }).then(function (response) {
      return response.json().then(function (body) {
        body.status = response.status;
        return self._remember(body);
      });
    });
  };

  /** Tell the server a call happened (request log); failures are ignored. */
  Gatekeeper.prototype.track = function (call) {
    return fetch(this.baseUrl + "/sdk/track", {
      method: "POST",
      headers: this._headers(),
      body: JSON.stringify({
        endpoint: call.endpoint || "",
        method: call.method || "GET",
        status: call.status || 200,
        latency_ms: call.latencyMs == null ? null : call.latencyMs,
      }),
    }).then(function () { return true; }, function () { return false; });
  };

  /** fetch() that checks first: rejects with GatekeeperLimitError instead of calling. */
  Gatekeeper.prototype.fetch = function (url, init) {
    var self = this;
    init = init || {};
    return this.check({ endpoint: String(url) }).then(function (verdict) {
      if (!verdict.allowed) throw new GatekeeperLimitError(verdict);
      var started = Date.now();
      return fetch(url, init).then(function (response) {
        if (self.trackCalls) {
          self.track({ endpoint: String(url), method: init.method || "GET",
                       status: response.status, latencyMs: Date.now() - started });
        }
        return response;
      });
    });
  };

  /** Current usage of the key: tier, limits, counts this hour and today. */
  Gatekeeper.prototype.usage = function () {
    return fetch(this.baseUrl + "/usage", { headers: this._headers() }).then(function (r) {
      return r.json();
    });
  };

  /** Keep `element`'s text showing the remaining quota after every check. */
  Gatekeeper.prototype.renderQuota = function (element) {
    function draw(verdict) {
      if (!verdict) { element.textContent = "quota: unknown"; return; }
      if (verdict.limit === undefined) {
        element.textContent = verdict.allowed ? "allowed" : "denied: " + (verdict.message || "");
        return;
      }
      var text = "remaining " + verdict.remaining + " / " + verdict.limit;
      if (!verdict.allowed) text += " (retry in " + verdict.retry_after + " s)";
      element.textContent = text;
      element.setAttribute("data-allowed", verdict.allowed ? "true" : "false");
    }
    draw(this.last);
    this.onChange(draw);
  };

  root.Gatekeeper = Gatekeeper;
  root.GatekeeperLimitError = GatekeeperLimitError;
})(typeof window !== "undefined" ? window : this);

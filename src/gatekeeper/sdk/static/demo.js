/* The /sdk page's behaviour (a separate file: the page's CSP forbids inline scripts). */
(function () {
  "use strict";
  var out = document.getElementById("out");
  var gk = new window.Gatekeeper({ baseUrl: "" });
  gk.renderQuota(document.getElementById("quota"));
  function key() { gk.apiKey = document.getElementById("key").value.trim() || null; }
  function show(value) { out.textContent = JSON.stringify(value, null, 2); }
  document.getElementById("check").addEventListener("click", function () {
    key();
    gk.check({ endpoint: "/demo" }).then(show, function (e) { show(String(e)); });
  });
  document.getElementById("usage").addEventListener("click", function () {
    key();
    gk.usage().then(show, function (e) { show(String(e)); });
  });
})();

// OmniQ dashboard: refresh the page's live part every few seconds (short polling, no library).
// The server sends that part only when asked with the X-OmniQ-Live header; it is HTML the
// server escaped, from this origin. A refresh waits while the tab is hidden or a control
// inside the live part has the focus, so it never takes a half-typed value away.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var stamp = document.getElementById("updated");
  if (!live) { return; }
  var every = Number(live.getAttribute("data-poll") || 0);
  if (!every) { return; }
  var busy = false;

  function editing() {
    var active = document.activeElement;
    return active && live.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh() {
    if (busy || document.hidden || editing()) { return; }
    busy = true;
    fetch(window.location.href, { headers: { "X-OmniQ-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); stamp.classList.remove("stale"); }
      })
      .catch(function () {
        if (stamp) { stamp.textContent = "not updated: the dashboard does not answer"; stamp.classList.add("stale"); }
      })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
})();

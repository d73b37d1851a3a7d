// Reload the stats page every few seconds while the box is ticked (the charts are drawn on the
// server, so a reload is the whole update). The choice survives reloads in sessionStorage.
(function () {
  "use strict";
  var root = document.getElementById("operator-stats");
  var box = document.getElementById("stats-autorefresh");
  if (!root || !box) { return; }
  var seconds = parseInt(root.getAttribute("data-refresh-seconds"), 10) || 30;
  var key = "mjgate-operator-stats-autorefresh";
  if (window.sessionStorage && sessionStorage.getItem(key) === "off") { box.checked = false; }
  var timer = null;
  function schedule() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (box.checked) { timer = setTimeout(function () { window.location.reload(); }, seconds * 1000); }
  }
  box.addEventListener("change", function () {
    if (window.sessionStorage) { sessionStorage.setItem(key, box.checked ? "on" : "off"); }
    schedule();
  });
  schedule();
})();

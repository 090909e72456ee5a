/* Keeps a job's badge, bytes and phase current without reloading (Respaldo console).
 * Every element with a non-empty data-status-url is polled every two seconds until its
 * job ends. No library, no CDN; without JavaScript the pages refresh themselves instead. */
(function () {
  "use strict";
  var INTERVAL = 2000;

  function showMessage(text, level) {
    if (!text) return;
    var list = document.querySelector("ul.messagelist");
    if (!list) {
      list = document.createElement("ul");
      list.className = "messagelist";
      var content = document.getElementById("content") || document.body;
      content.parentNode.insertBefore(list, content);
    }
    var item = document.createElement("li");
    item.className = level;
    item.setAttribute("role", "status");
    item.textContent = text;
    list.appendChild(item);
  }

  function updateRow(badge, data) {
    badge.className = "respaldo-badge respaldo-" + data.status;
    badge.setAttribute("data-status", data.status);
    var text = badge.querySelector(".respaldo-badge-text");
    if (text) text.textContent = data.status_label;
    var symbol = badge.querySelector("[aria-hidden]");
    var symbols = {pending: "…", running: "⟳", succeeded: "✓", failed: "✗", expired: "⌛"};
    if (symbol && symbols[data.status]) symbol.textContent = symbols[data.status];
    var row = badge.closest("tr");
    if (!row) return;
    var bytes = row.querySelector(".respaldo-bytes");
    if (bytes) bytes.textContent = data.finished ? data.size_label : data.bytes_label;
    var duration = row.querySelector(".field-duration_display");
    if (duration && data.finished) duration.textContent = data.duration_label;
    var actions = row.querySelector(".field-row_actions");
    if (actions && data.actions_html) actions.innerHTML = data.actions_html;
  }

  function updatePhases(data) {
    var items = document.querySelectorAll(".respaldo-phases li[data-phase]");
    var before = data.phase !== "";
    for (var i = 0; i < items.length; i++) {
      var isCurrent = items[i].getAttribute("data-phase") === data.phase;
      if (isCurrent) before = false;
      items[i].classList.toggle("current", isCurrent && !data.finished);
      items[i].classList.toggle("done", before || (isCurrent && data.finished && data.status === "succeeded"));
    }
  }

  function poll(badge) {
    var url = badge.getAttribute("data-status-url");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.redirected) { window.location.reload(); return null; }
        if (!response.ok) return null; // 503 while the restore switches data: try again
        return response.json();
      })
      .then(function (data) {
        if (!data) { setTimeout(function () { poll(badge); }, INTERVAL); return; }
        updateRow(badge, data);
        updatePhases(data);
        if (!data.finished) { setTimeout(function () { poll(badge); }, INTERVAL); return; }
        badge.setAttribute("data-status-url", "");
        var page = document.querySelector("[data-reload-when-finished]");
        if (page) { window.location.search = "?ended=1"; return; }
        showMessage(data.message, data.status === "succeeded" ? "success" : "error");
      })
      .catch(function () { setTimeout(function () { poll(badge); }, INTERVAL); });
  }

  /* The restore confirmation's record-by-record figures: a worker computes them; when it has,
   * the section is replaced by the server's rendering of it. */
  function pollDifferences(section) {
    var url = section.getAttribute("data-differences-url");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok && !response.redirected ? response.json() : null; })
      .then(function (data) {
        if (!data || !data.finished) { setTimeout(function () { pollDifferences(section); }, INTERVAL); return; }
        section.outerHTML = data.html;
      })
      .catch(function () { setTimeout(function () { pollDifferences(section); }, INTERVAL); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.querySelector("#respaldo-differences[data-differences-url]");
    if (section) pollDifferences(section);
    var badges = document.querySelectorAll("[data-status-url]");
    for (var i = 0; i < badges.length; i++) {
      if (badges[i].getAttribute("data-status-url")) poll(badges[i]);
    }
  });
})();

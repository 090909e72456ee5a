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
    badge.setAttribute("title", data.status_label);
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

  /* The phase strip: finished phases get ✓, the current one ▶ (and "(done)"/"(now)" for screen
   * readers); the live region below it announces the current phase. A finished job has none current. */
  function updatePhases(data) {
    var strip = document.querySelector(".respaldo-phases");
    if (!strip) return;
    var items = strip.querySelectorAll("li[data-phase]");
    var known = false;
    for (var k = 0; k < items.length; k++) {
      if (items[k].getAttribute("data-phase") === data.phase) known = true;
    }
    if (!data.finished && !known) return; // waiting for a worker: nothing to move yet
    var before = true, currentLabel = "";
    for (var i = 0; i < items.length; i++) {
      var item = items[i];
      var state = item.classList.contains("skipped") ? "skipped" : "";
      if (data.finished) {
        // The page reloads with the final strip; meanwhile nothing is current, and a
        // succeeded job finished the phase it was in.
        if (item.classList.contains("current") && data.status === "succeeded") state = "done";
        else if (item.classList.contains("done")) state = "done";
      } else if (item.getAttribute("data-phase") === data.phase) {
        state = "current";
        before = false;
        currentLabel = data.phase_label;
      } else if (before) {
        state = "done";
      }
      setPhase(strip, item, state);
    }
    var live = document.querySelector(".respaldo-phase-now");
    if (live) {
      var text = currentLabel ? live.getAttribute("data-prefix") + " " + currentLabel : "";
      if (live.textContent !== text) live.textContent = text;
    }
  }

  function setPhase(strip, item, state) {
    item.classList.toggle("done", state === "done");
    item.classList.toggle("current", state === "current");
    var mark = item.querySelector(".respaldo-phase-mark");
    if (mark) mark.textContent = state === "done" ? "✓" : state === "current" ? "▶" : "";
    var words = item.querySelector(".respaldo-phase-state");
    if (words && state !== "skipped") {
      var said = state === "done" ? strip.getAttribute("data-done-text") :
        state === "current" ? strip.getAttribute("data-now-text") : "";
      words.textContent = said ? " (" + said + ")" : "";
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

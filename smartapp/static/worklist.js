// The coach worklist follows changes without reloading: it polls the page's live endpoint
// (a small JSON answer while nothing changed) and replaces only the rows whose version
// changed, never a row the coach is typing in (that one is replaced at the next change).
// Without JavaScript the page works as before; a reload shows the latest.
(function () {
  "use strict";
  var table = document.getElementById("worklist");
  if (!table || !window.fetch) { return; }
  var url = table.dataset.live;
  var version = table.dataset.version;
  var seconds = parseInt(table.dataset.pollSeconds, 10) || 5;
  var status = document.getElementById("live-status");
  var empty = document.querySelector("p.none");

  function busy(row) {
    var active = document.activeElement;
    if (active && active !== document.body && row.contains(active) &&
        (active.tagName === "INPUT" || active.tagName === "SELECT")) { return true; }
    return Array.prototype.some.call(
      row.querySelectorAll("input:not([type=hidden])"),
      function (input) { return input.value !== ""; });
  }

  function rowFrom(html) {
    var holder = document.createElement("tbody");
    holder.innerHTML = html.trim();
    return holder.firstElementChild;
  }

  function apply(data) {
    var body = table.tBodies[0];
    var existing = {};
    var kept = {};
    var skipped = false;
    Array.prototype.forEach.call(body.rows, function (row) { existing[row.dataset.referral] = row; });
    data.rows.forEach(function (item, index) {
      var row = existing[item.id];
      if (!row || row.dataset.version !== item.version) {
        if (row && busy(row)) { skipped = true; } else {
          var fresh = rowFrom(item.html);
          if (row) { body.replaceChild(fresh, row); } else { body.appendChild(fresh); }
          row = fresh;
        }
      }
      kept[item.id] = true;
      if (body.rows[index] !== row) { body.insertBefore(row, body.rows[index] || null); }
    });
    Object.keys(existing).forEach(function (id) {
      if (kept[id]) { return; }
      if (busy(existing[id])) { skipped = true; } else { body.removeChild(existing[id]); }
    });
    var loads = document.getElementById("worklist-loads");
    if (loads && data.loads) { loads.innerHTML = data.loads; }
    if (empty) { empty.hidden = data.rows.length > 0; }
    version = skipped ? "" : data.version;
    table.dataset.version = data.version;
    if (status) { status.textContent = "Updated " + new Date().toLocaleTimeString(); }
  }

  function poll() {
    var sep = url.indexOf("?") >= 0 ? "&" : "?";
    fetch(url + sep + "v=" + encodeURIComponent(version), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (response.ok && type.indexOf("json") >= 0) { return response.json(); }
      // Signed out (idle or ended) or refused: say so rather than show stale rows as live.
      if (status) { status.textContent = "Not updating: reload the page (you may need to sign in again)."; }
      return null;
    }).then(function (data) {
      if (data && data.changed) { apply(data); }
    }).catch(function () {  // offline, or sent to sign in elsewhere: the next poll tries again
      if (status) { status.textContent = "Not updating: could not reach Handoff (trying again; reload if it lasts)."; }
    })
      .then(function () { window.setTimeout(poll, seconds * 1000); });
  }
  window.setTimeout(poll, seconds * 1000);
})();

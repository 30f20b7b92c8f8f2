// Filters the community program list on the physician's screen. Without JavaScript the full list
// still works; the filters stay hidden.
(function () {
  "use strict";
  var select = document.getElementById("program");
  var filters = document.querySelector(".program-filters");
  if (!select || !filters) { return; }
  var service = document.getElementById("program-service");
  var openNow = document.getElementById("program-open");
  var takingNew = document.getElementById("program-new");
  filters.hidden = false;
  function apply() {
    Array.prototype.forEach.call(select.options, function (option) {
      if (!option.value) { return; }
      var services = (option.dataset.services || "").split(" ");
      var show = (!service.value || services.indexOf(service.value) >= 0) &&
        (!openNow.checked || option.dataset.open === "yes") &&
        (!takingNew.checked || option.dataset.new === "yes");
      option.hidden = !show;
      option.disabled = !show;
      if (!show && option.selected) { select.value = ""; }
    });
  }
  [service, openNow, takingNew].forEach(function (el) { el.addEventListener("change", apply); });
})();

// Follows a signed referral that is still being written: polls the screen's status endpoint
// and reloads the page when the write lands (or anything about it changes).
(function () {
  "use strict";
  var result = document.getElementById("result");
  if (!result || !result.dataset.statusUrl || !window.fetch) { return; }
  var shown = [result.dataset.status, result.dataset.attempts, result.dataset.writing].join("/");
  var wait = 1000;
  function again() {
    wait = Math.min(wait * 1.5, 15000);
    window.setTimeout(poll, wait);
  }
  function poll() {
    window.fetch(result.dataset.statusUrl, {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (now) {
      if (now && [now.status, now.attempts, now.writing].join("/") !== shown) {
        window.location.reload();
      } else {
        again();
      }
    }).catch(again);
  }
  window.setTimeout(poll, wait);
})();

// "Accept all suggestions": checks Accept on every card (the physician still presses Sign);
// nothing is pre-accepted. Without JavaScript the button stays hidden.
(function () {
  "use strict";
  var button = document.querySelector(".accept-all");
  if (!button) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    Array.prototype.forEach.call(
      document.querySelectorAll('fieldset.suggestion input[type="radio"][value="accept"]'),
      function (radio) { radio.checked = true; }
    );
    var sign = document.querySelector("button.sign");
    if (sign) { sign.focus(); }
  });
})();

// The chosen program's phone and hours in full, below the list (they wrap; the list stays
// as wide as the sidebar).
(function () {
  "use strict";
  var select = document.getElementById("program");
  var detail = document.querySelector(".program-detail");
  if (!select || !detail) { return; }
  function show() {
    var option = select.options[select.selectedIndex];
    detail.textContent = option && option.value ? option.dataset.detail || "" : "";
  }
  select.addEventListener("change", show);
  show();
})();

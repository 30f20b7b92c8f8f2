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

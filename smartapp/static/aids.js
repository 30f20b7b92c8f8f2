// Decision aids (smartapp.aids): a running total for the COWS calculator and a running count
// for the DSM-5 checklist, with the band from the page's own data (rules/aids/*.yaml). The
// forms post without this script; it only says the total before Record.
(function () {
  "use strict";
  if (window.handoffAidsLoaded) { return; }
  window.handoffAidsLoaded = true;

  function bandOf(list, value) {
    if (!list) { return ""; }
    var items = list.querySelectorAll("li");
    for (var i = 0; i < items.length; i++) {
      var min = Number(items[i].getAttribute("data-min"));
      var max = Number(items[i].getAttribute("data-max"));
      if (value >= min && value <= max) { return items[i].textContent; }
    }
    return "";
  }

  function cows(form) {
    var out = form.querySelector("#cows-total");
    var items = form.querySelectorAll("fieldset.cows-item");
    function update() {
      var total = 0, answered = 0;
      for (var i = 0; i < items.length; i++) {
        var picked = items[i].querySelector("input[type=radio]:checked");
        if (picked) { total += Number(picked.value); answered += 1; }
      }
      if (!answered) { out.textContent = "not scored yet"; return; }
      var words = total + " (" + bandOf(form.querySelector(".cows-bands"), total) + ")";
      if (answered < items.length) {
        words += ", " + (items.length - answered) + " of " + items.length + " items still to answer";
      }
      out.textContent = words;
    }
    form.addEventListener("change", update);
    update();
  }

  function dsm5(form) {
    var out = form.querySelector("#dsm5-count");
    function update() {
      var count = form.querySelectorAll("input[name=dsm5]:checked").length;
      out.textContent = count + " (" + bandOf(form.querySelector(".dsm5-bands"), count) + ")";
    }
    form.addEventListener("change", update);
    update();
  }

  function start() {
    var c = document.querySelector("form.cows-form");
    if (c) { cows(c); }
    var d = document.querySelector("form.dsm5-form");
    if (d) { dsm5(d); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());

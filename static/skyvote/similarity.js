// "Which images are similar?": tiles toggle (aria-pressed), a key per tile, Enter submits,
// N answers "no images are similar". The task section is swapped by htmx after every answer.
(function () {
  function form() { return document.getElementById("sim-form"); }

  function selectedIds(f) {
    return Array.prototype.map.call(
      f.querySelectorAll('.sim-candidate[aria-pressed="true"]'),
      function (b) { return b.dataset.subject; }
    );
  }

  function sync() {
    var f = form();
    if (!f) return;
    var ids = selectedIds(f);
    f.elements["chosen"].value = ids.join(",");
    var count = document.getElementById("sim-selected-count");
    if (count) count.textContent = ids.length + " selected";
  }

  function init() {
    var f = form();
    if (!f) return;
    if (!f.dataset.keepStart) f.elements["started_at"].value = new Date().toISOString();
    f.elements["viewport"].value = window.innerWidth + "x" + window.innerHeight;
    sync();
  }

  function toggle(button) {
    var pressed = button.getAttribute("aria-pressed") === "true";
    button.setAttribute("aria-pressed", pressed ? "false" : "true");
    sync();
  }

  function zoom(url) {
    if (!url) return;
    var dialog = document.getElementById("sim-zoom-dialog");
    document.getElementById("sim-zoom-image").src = url;
    if (!dialog.open) dialog.showModal();
  }

  document.addEventListener("DOMContentLoaded", function () {
    init();
    // The tutorial is a modal dialog, as on the real/bogus page (classify.js): in the top layer and
    // centred, so focusing its button does not scroll the page past the heading.
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.dataset.firstVisit === "1" && tutorial.showModal && !tutorial.open) tutorial.showModal();
  });
  document.body.addEventListener("htmx:afterSwap", init);
  // A refused answer (an expired ticket, "slow down", nothing selected) comes back as a 4xx with the
  // task section saying why; htmx would drop it, so swap it in like any other answer.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 500 && event.detail.target && event.detail.target.id === "sim-task") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("click", function (event) {
    var candidate = event.target.closest(".sim-candidate");
    if (candidate) { toggle(candidate); return; }
    var zoomer = event.target.closest("[data-zoom]");
    if (zoomer) { zoom(zoomer.dataset.zoom); return; }
    if (event.target.closest("#sim-none")) {
      // "No images are similar" means exactly that: any selection is dropped.
      var f = form();
      f.querySelectorAll('.sim-candidate[aria-pressed="true"]').forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
      sync();
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.open) {
      if (event.key === "Enter" || event.key === "Escape") {
        event.preventDefault();
        document.getElementById("tutorial-close").click();
      }
      return;
    }
    var zoomDialog = document.getElementById("sim-zoom-dialog");
    if (zoomDialog && zoomDialog.open) return; // Esc closes it natively
    var f = form();
    if (!f) return;
    if (event.key === "Enter") {
      event.preventDefault();
      var submit = document.getElementById("sim-submit");
      if (!submit.disabled) submit.click();
      return;
    }
    var key = event.key.length === 1 ? event.key.toUpperCase() : "";
    if (!key) return;
    if (key === "N") {
      event.preventDefault();
      var none = document.getElementById("sim-none");
      if (!none.disabled) none.click();
      return;
    }
    var tile = f.querySelector('.sim-candidate[data-key="' + key + '"]');
    if (tile) {
      event.preventDefault();
      toggle(tile);
    }
  });
})();

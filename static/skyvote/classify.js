// Keyboard-first classifying: each answer button lists its keys in data-keys.
// The form is swapped by htmx after every vote; we fill the client fields on each swap.
(function () {
  function fillClientFields() {
    var form = document.getElementById("vote-form");
    if (!form) return;
    form.elements["started_at"].value = new Date().toISOString();
    form.elements["viewport"].value = window.innerWidth + "x" + window.innerHeight;
  }
  document.addEventListener("DOMContentLoaded", function () {
    fillClientFields();
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.dataset.firstVisit === "1" && tutorial.showModal) tutorial.showModal();
  });
  document.body.addEventListener("htmx:afterSwap", fillClientFields);
  // A refused vote (an expired ticket, "slow down", an answer that makes no sense) comes back as a
  // 4xx with the task section saying why; htmx would drop it, so swap it in like any other answer.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 500 && event.detail.target && event.detail.target.id === "task") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.open) {
      if (event.key === "Enter" || event.key === "Escape") {
        event.preventDefault();
        document.getElementById("tutorial-close").click();
      }
      return;
    }
    var form = document.getElementById("vote-form");
    if (!form) return;
    var key = event.key.toUpperCase();
    var buttons = form.querySelectorAll("button[data-keys]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].dataset.keys.split(" ").indexOf(key) !== -1) {
        event.preventDefault();
        // A key pressed within htmx's settle delay after a swap can reach the new form
        // before htmx has wired it up, which would submit it natively (a full reload).
        if (window.htmx) htmx.process(form);
        if (!buttons[i].disabled) buttons[i].click();
        return;
      }
    }
  });
})();

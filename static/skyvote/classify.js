// Keyboard-first classifying: each answer button lists its keys in data-keys.
// The form is swapped by htmx after every vote; we fill the client fields on each swap.
//
// Gold feedback stays with the subject it is about: the reply to a gold answer carries the feedback
// (data-feedback-for = the answered subject) and the next subject. We show the feedback over the
// answered images, which are still on the page, and keep the next subject back until the feedback is
// dismissed: after data-feedback-ms, a key press (which only dismisses: it never answers the next
// subject) or "Next". Nothing on the page moves meanwhile, the answer buttons least of all.
//
// U (or the Undo button) takes back the last answer while the server allows it; the workflow's own
// answer keys win if one of them is U.
(function () {
  var pending = null; // the feedback on screen: {overlay, triplet, html, ms, timer}

  function answerUses(key) {
    var form = document.getElementById("vote-form");
    if (!form) return false;
    var buttons = form.querySelectorAll("button[data-keys]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].dataset.keys.split(" ").indexOf(key) !== -1) return true;
    }
    return false;
  }

  function stopTimer() {
    if (pending && pending.timer) {
      clearTimeout(pending.timer);
      pending.timer = null;
    }
  }

  function startTimer() {
    if (!pending || pending.timer || !(pending.ms > 0)) return;
    pending.timer = setTimeout(function () {
      closeFeedback(true);
    }, pending.ms);
  }

  // Take the feedback away; with `showNext` swap in the subject kept back, otherwise drop it (an undo
  // is on its way and brings its own).
  function closeFeedback(showNext) {
    if (!pending) return;
    var p = pending;
    stopTimer();
    pending = null;
    if (p.overlay.parentNode) p.overlay.parentNode.removeChild(p.overlay);
    p.triplet.classList.remove("has-feedback");
    if (showNext && document.getElementById("task")) {
      htmx.swap("#task", p.html, { swapStyle: "outerHTML" });
    }
  }

  function showFeedback(triplet, feedback, html) {
    var overlay = document.importNode(feedback, true);
    overlay.classList.add("feedback-overlay");
    var next = overlay.querySelector("[data-feedback-next]");
    if (next) {
      next.hidden = false;
      next.addEventListener("click", function () {
        closeFeedback(true);
      });
    }
    pending = { overlay: overlay, triplet: triplet, html: html, ms: parseInt(feedback.dataset.feedbackMs, 10), timer: null };
    // Reading the feedback (the pointer on it, or the keyboard in its links) holds the timer.
    overlay.addEventListener("mouseenter", stopTimer);
    overlay.addEventListener("mouseleave", startTimer);
    overlay.addEventListener("focusin", stopTimer);
    triplet.classList.add("has-feedback");
    triplet.appendChild(overlay);
    startTimer();
  }

  // The counter and the Undo button of the reply belong to the answer just given: they replace the
  // page's at once (same line, same height), so U during the feedback undoes that answer.
  function takeCounterRow(fragment) {
    var fresh = fragment.querySelector(".counter-row");
    var current = document.querySelector("#task .counter-row");
    if (!fresh || !current) return;
    var row = document.importNode(fresh, true);
    current.parentNode.replaceChild(row, current);
    if (window.htmx) htmx.process(row);
    armUndo(row);
  }

  // The Undo button goes when its window closes (the server refuses after it anyway).
  function armUndo(root) {
    var forms = (root || document).querySelectorAll("form.undo[data-undo-left-s]");
    for (var i = 0; i < forms.length; i++) {
      (function (form) {
        var left = parseInt(form.dataset.undoLeftS, 10);
        if (!(left >= 0)) return;
        setTimeout(function () {
          form.hidden = true;
        }, left * 1000);
      })(forms[i]);
    }
    var hint = (root || document).querySelectorAll("form.undo kbd");
    for (var j = 0; j < hint.length; j++) hint[j].hidden = answerUses("U");
  }

  function undo() {
    var button = document.querySelector("#task form.undo:not([hidden]) button");
    if (!button) return false;
    if (window.htmx) htmx.process(button.form);
    button.click();
    return true;
  }

  function fillClientFields() {
    var form = document.getElementById("vote-form");
    if (!form) return;
    form.elements["started_at"].value = new Date().toISOString();
    form.elements["viewport"].value = window.innerWidth + "x" + window.innerHeight;
  }
  document.addEventListener("DOMContentLoaded", function () {
    fillClientFields();
    armUndo(document);
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.dataset.firstVisit === "1" && tutorial.showModal) tutorial.showModal();
  });
  document.body.addEventListener("htmx:afterSwap", function () {
    fillClientFields();
    armUndo(document.getElementById("task"));
  });
  // A refused vote (an expired ticket, "slow down", an answer that makes no sense) comes back as a
  // 4xx with the task section saying why; htmx would drop it, so swap it in like any other answer.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 500 && event.detail.target && event.detail.target.id === "task") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
    if (!event.detail.shouldSwap || !event.detail.target || event.detail.target.id !== "task") return;
    var reply = document.createElement("template");
    reply.innerHTML = event.detail.serverResponse;
    var feedback = reply.content.querySelector("[data-feedback-for]");
    if (!feedback) return;
    var triplet = document.querySelector('#task .triplet[data-subject="' + feedback.dataset.feedbackFor + '"]');
    if (!triplet) return; // the answered images are gone: the reply goes in as it is, feedback on top
    event.detail.shouldSwap = false;
    feedback.parentNode.removeChild(feedback);
    takeCounterRow(reply.content);
    showFeedback(triplet, feedback, reply.innerHTML);
  });
  // A request for the task section while feedback is shown (the Undo button) replaces what was kept back.
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    if (pending && event.detail.target && event.detail.target.id === "task") closeFeedback(false);
  });
  // The answered subject's buttons are still there under the feedback: a click on one only moves on.
  document.addEventListener(
    "click",
    function (event) {
      if (!pending || !event.target.closest) return;
      if (event.target.closest("#vote-form .answers button")) {
        event.preventDefault();
        event.stopPropagation();
        closeFeedback(true);
      }
    },
    true
  );

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
    var key = event.key.toUpperCase();
    if (pending) {
      // Letters, digits, space, Enter, Escape and → move on; Tab, modifiers and F-keys keep their jobs,
      // and the stamp tools' keys (data-key, when no answer uses them) still look at the answered images.
      if (key.length !== 1 && ["ENTER", "ESCAPE", "ARROWRIGHT"].indexOf(key) === -1) return;
      var tool = /^[A-Z]$/.test(key) && document.querySelector('[data-stamp-tool][data-key="' + key + '"]');
      if (tool && !answerUses(key)) return;
      event.preventDefault();
      if (key === "U" && !answerUses("U")) {
        undo(); // takes the answer just given back; the feedback goes with the request
      } else {
        closeFeedback(true); // any other key only moves on: it never answers the next subject
      }
      return;
    }
    if (key === "U" && !answerUses("U") && undo()) {
      event.preventDefault();
      return;
    }
    var form = document.getElementById("vote-form");
    if (!form) return;
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

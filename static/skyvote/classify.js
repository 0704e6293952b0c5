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
//
// Follow-ups ("What kind?", core.followups): an answer button with data-followup opens its question
// in place of the answers instead of sending; a type (its digit, its letter, 0 for "not sure") then
// sends the answer and the type as one vote. Esc or Backspace goes back to the answers. An optional
// question may be passed (Enter, or "Pass") and is not asked at all in fast mode (F, remembered in
// localStorage); a required one has neither.
(function () {
  var pending = null; // the feedback on screen: {overlay, triplet, html, ms, timer}
  var FAST_MODE_KEY = "skyvote-fast-mode";

  function fastMode() {
    try {
      return window.localStorage.getItem(FAST_MODE_KEY) === "1";
    } catch (e) {
      return false;
    }
  }

  function showFastMode() {
    var toggle = document.querySelector("#vote-form [data-fast-mode]");
    if (!toggle) return;
    var on = fastMode();
    toggle.hidden = false;
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
    toggle.querySelector("[data-fast-mode-state]").textContent = on ? "on" : "off";
  }

  function toggleFastMode() {
    if (!document.querySelector("#vote-form [data-fast-mode]")) return false;
    try {
      window.localStorage.setItem(FAST_MODE_KEY, fastMode() ? "0" : "1");
    } catch (e) {
      return false;
    }
    showFastMode();
    return true;
  }

  function openFollowup() {
    return document.querySelector("#vote-form .followup:not([hidden])");
  }

  // The question to ask after this answer button, or null to send the answer at once.
  function followupFor(button) {
    var id = button && button.dataset.followup;
    var question = id && document.getElementById(id);
    if (!question) return null;
    if (question.dataset.mode === "optional" && fastMode()) return null;
    return question;
  }

  function askFollowup(button, question) {
    var form = button.form;
    var main = form.querySelector("[data-main-answers]");
    var answer = form.querySelector("[data-followup-answer]");
    answer.value = button.value;
    answer.disabled = false;
    button.setAttribute("aria-expanded", "true");
    main.hidden = true;
    question.hidden = false;
    question.focus();
  }

  function backToAnswers() {
    var question = openFollowup();
    if (!question) return false;
    var form = question.closest("form");
    var answer = form.querySelector("[data-followup-answer]");
    question.hidden = true;
    answer.disabled = true;
    answer.value = "";
    var main = form.querySelector("[data-main-answers]");
    var opened = main.querySelector('[aria-controls="' + question.id + '"]');
    if (opened) opened.setAttribute("aria-expanded", "false");
    main.hidden = false;
    var back = main.querySelector('button[value="' + (answer.dataset.last || "") + '"]') || main.querySelector("button");
    if (back) back.focus();
    return true;
  }

  // An answer with a question opens it instead of sending (capture: before htmx sees the submit).
  document.addEventListener(
    "click",
    function (event) {
      if (pending || !event.target.closest) return;
      var button = event.target.closest("#vote-form [data-main-answers] button[data-followup]");
      if (!button || button.disabled) return;
      var question = followupFor(button);
      if (!question) return;
      event.preventDefault();
      button.form.querySelector("[data-followup-answer]").dataset.last = button.value;
      askFollowup(button, question);
    },
    true
  );
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest("#vote-form [data-followup-back]")) backToAnswers();
    else if (event.target.closest("#vote-form [data-fast-mode]")) toggleFastMode();
  });

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
    showFastMode();
    armUndo(document);
    var tutorial = document.getElementById("tutorial");
    if (tutorial && tutorial.dataset.firstVisit === "1" && tutorial.showModal) tutorial.showModal();
  });
  document.body.addEventListener("htmx:afterSwap", function () {
    fillClientFields();
    showFastMode();
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
    var question = openFollowup();
    if (question) {
      if (key === "ESCAPE" || key === "BACKSPACE") {
        event.preventDefault();
        backToAnswers();
        return;
      }
      if (key === "ENTER") {
        // A type button reached with Tab keeps Enter; otherwise Enter passes an optional question.
        if (target && target.closest && target.closest(".followup button")) return;
        event.preventDefault();
        var pass = question.querySelector("[data-followup-pass]");
        if (pass && !pass.disabled) {
          if (window.htmx) htmx.process(form);
          pass.click();
        }
        return;
      }
    }
    if (key === "F" && !answerUses("F") && toggleFastMode()) {
      event.preventDefault();
      return;
    }
    var buttons = (question || form.querySelector("[data-main-answers]") || form).querySelectorAll("button[data-keys]");
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

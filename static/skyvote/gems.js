// "Rare gem?" on both task pages (templates/core/_gem_control.html inside the vote form): the toggle
// (or G) flags the subject on screen as unusual and opens an optional note; both go with the answer
// as the form's `gem` and `gem_note` fields. It never answers: the volunteer still answers as usual.
//
// Keys: G toggles, unless the workflow's own answer keys (the buttons' data-keys, a similarity tile's
// data-key) use G: then the answer wins, as with the stamp tools, and only the button flags. Turning
// the flag on puts the cursor in the note; Esc (or Enter) leaves the note, so the answer keys work
// again (classify.js and similarity.js ignore keys typed into fields).
//
// Each new subject arrives in a new form (htmx swaps the task section), so the flag starts off again.
(function () {
  function control() {
    return document.querySelector("[data-gem]");
  }

  function takenKeys(gem) {
    var form = gem.closest("form");
    var keys = [];
    if (!form) return keys;
    var answers = form.querySelectorAll("[data-keys]");
    for (var i = 0; i < answers.length; i++) keys = keys.concat(answers[i].dataset.keys.split(" "));
    var tiles = form.querySelectorAll("[data-key]:not([data-gem-toggle])");
    for (var j = 0; j < tiles.length; j++) keys.push(tiles[j].dataset.key);
    return keys;
  }

  function keyIsFree(gem) {
    var toggle = gem.querySelector("[data-gem-toggle]");
    return takenKeys(gem).indexOf(toggle.dataset.key) === -1;
  }

  function init() {
    var gem = control();
    if (!gem) return;
    gem.hidden = false;
    var toggle = gem.querySelector("[data-gem-toggle]");
    if (!toggle.hasAttribute("aria-pressed")) toggle.setAttribute("aria-pressed", "false");
    var free = keyIsFree(gem);
    toggle.toggleAttribute("data-key-off", !free);
    if (free) toggle.setAttribute("aria-keyshortcuts", toggle.dataset.key);
    else toggle.removeAttribute("aria-keyshortcuts");
  }

  function set(gem, on, focusNote) {
    var toggle = gem.querySelector("[data-gem-toggle]");
    var row = gem.querySelector("[data-gem-note-row]");
    var note = gem.querySelector("[data-gem-note]");
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
    gem.querySelector("[data-gem-field]").value = on ? "1" : "";
    row.hidden = !on;
    if (on && focusNote) note.focus();
    else if (!on && document.activeElement === note) toggle.focus();
  }

  function flip(gem, focusNote) {
    var on = gem.querySelector("[data-gem-toggle]").getAttribute("aria-pressed") !== "true";
    set(gem, on, focusNote);
  }

  document.addEventListener("DOMContentLoaded", init);
  document.body.addEventListener("htmx:afterSwap", init);

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var toggle = target && target.closest("[data-gem-toggle]");
    if (toggle) flip(toggle.closest("[data-gem]"), true);
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (target && target.matches("[data-gem-note]")) {
      // Leaving the note: the answer keys work again. Enter would otherwise submit the form with its
      // first button, an answer the volunteer never chose.
      if (event.key === "Escape" || event.key === "Enter") {
        event.preventDefault();
        target.closest("[data-gem]").querySelector("[data-gem-toggle]").focus();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || event.defaultPrevented) return;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
    if (document.querySelector("dialog[open]")) return;
    var gem = control();
    if (!gem || gem.hidden || event.key.length !== 1) return;
    var toggle = gem.querySelector("[data-gem-toggle]");
    if (event.key.toUpperCase() !== toggle.dataset.key || !keyIsFree(gem)) return;
    event.preventDefault(); // not typed into the note the flag opens
    flip(gem, true);
  });
})();

// Stamp tools on the real/bogus classify page (templates/labeling/_stamp_tools.html): zoom into the
// centre (Z, the button, or a pinch), a contrast preset (C cycles zscale → min–max → asinh, or the
// buttons) and invert (I). All three stamps change together, and the choice sticks for this browser
// (localStorage) across subjects, which htmx swaps in, and reloads.
//
// Contrast presets are real stretches of the data drawn by the server: each stamp carries one signed
// URL per preset (data-stretch-zscale, -minmax, -asinh; labeling's stretch_attrs tag) and we swap its
// src. Zoom and invert are CSS (static/skyvote/skyvote.css, "Stamp tools") keyed on attributes of the
// <html> element, so stamps swapped in later are drawn the same way without any work here.
//
// Keys: the workflow's answer keys win. A tool key that a workflow uses for an answer (its buttons'
// data-keys) is switched off, with its hint, for that workflow; the buttons still work.
(function () {
  var STORE = "skyvote.stampTools";
  var ZOOMS = [1, 2, 4];
  var STRETCHES = ["zscale", "minmax", "asinh"];
  var NOTES = {
    science: "Inverted: dark is bright",
    reference: "Inverted: dark is bright",
    difference: "Inverted: white is no change; orange is still brighter, blue fainter",
  };
  var state = load();

  function load() {
    var saved = {};
    try {
      saved = JSON.parse(window.localStorage.getItem(STORE) || "{}") || {};
    } catch (e) {
      saved = {};
    }
    return {
      zoom: ZOOMS.indexOf(saved.zoom) !== -1 ? saved.zoom : 1,
      stretch: STRETCHES.indexOf(saved.stretch) !== -1 ? saved.stretch : "zscale",
      invert: saved.invert === true,
    };
  }

  function save() {
    try {
      window.localStorage.setItem(STORE, JSON.stringify(state));
    } catch (e) {
      // Storage refused (private browsing, quota): the choice lasts until the page is left.
    }
  }

  function stamps() {
    return document.querySelectorAll(".triplet img[data-stretch-zscale]");
  }

  function answerKeys() {
    var keys = [];
    var buttons = document.querySelectorAll("#vote-form button[data-keys]");
    for (var i = 0; i < buttons.length; i++) keys = keys.concat(buttons[i].dataset.keys.split(" "));
    return keys;
  }

  function caption(img, text) {
    var figcaption = img.closest("figure") && img.closest("figure").querySelector("figcaption");
    if (!figcaption) return;
    var note = figcaption.querySelector(".stamp-note");
    if (!text) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = document.createElement("span");
      note.className = "stamp-note";
      figcaption.appendChild(note);
    }
    note.textContent = text;
  }

  function apply() {
    var root = document.documentElement;
    root.dataset.stampZoom = String(state.zoom);
    root.dataset.stampInvert = state.invert ? "1" : "0";
    var images = stamps();
    for (var i = 0; i < images.length; i++) {
      var img = images[i];
      var url = img.getAttribute("data-stretch-" + state.stretch);
      if (url && img.getAttribute("src") !== url) img.setAttribute("src", url);
      caption(img, state.invert ? NOTES[img.dataset.role] || NOTES.science : "");
    }
    var bar = document.getElementById("stamp-tools");
    if (!bar) return;
    bar.hidden = images.length === 0;
    document.getElementById("stamp-zoom-level").textContent = state.zoom + "×";
    document.getElementById("stamp-invert").setAttribute("aria-pressed", state.invert ? "true" : "false");
    var presets = bar.querySelectorAll("[data-stamp-stretch]");
    for (var j = 0; j < presets.length; j++) {
      presets[j].setAttribute("aria-pressed", presets[j].dataset.stampStretch === state.stretch ? "true" : "false");
    }
    var taken = answerKeys();
    var tools = bar.querySelectorAll("[data-stamp-tool][data-key]");
    for (var k = 0; k < tools.length; k++) {
      var off = taken.indexOf(tools[k].dataset.key) !== -1;
      tools[k].toggleAttribute("data-key-off", off);
      if (off) tools[k].removeAttribute("aria-keyshortcuts");
      else tools[k].setAttribute("aria-keyshortcuts", tools[k].dataset.key);
    }
  }

  function change(update) {
    update();
    save();
    apply();
  }

  function zoomBy(step) {
    var at = ZOOMS.indexOf(state.zoom) + step;
    if (at < 0 || at >= ZOOMS.length) return;
    change(function () { state.zoom = ZOOMS[at]; });
  }

  function cycleZoom() {
    change(function () { state.zoom = ZOOMS[(ZOOMS.indexOf(state.zoom) + 1) % ZOOMS.length]; });
  }

  function cycleStretch() {
    change(function () { state.stretch = STRETCHES[(STRETCHES.indexOf(state.stretch) + 1) % STRETCHES.length]; });
  }

  function toggleInvert() {
    change(function () { state.invert = !state.invert; });
  }

  document.addEventListener("DOMContentLoaded", apply);
  document.body.addEventListener("htmx:afterSwap", apply);

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target || !target.closest("#stamp-tools")) return;
    var preset = target.closest("[data-stamp-stretch]");
    if (preset) {
      change(function () { state.stretch = preset.dataset.stampStretch; });
      return;
    }
    var tool = target.closest("button[data-stamp-tool]");
    if (!tool) return;
    if (tool.dataset.stampTool === "zoom") cycleZoom();
    else if (tool.dataset.stampTool === "invert") toggleInvert();
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || event.defaultPrevented) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
    if (document.querySelector("dialog[open]") || stamps().length === 0) return;
    var key = event.key.length === 1 ? event.key.toUpperCase() : "";
    if (!key || answerKeys().indexOf(key) !== -1) return;
    var actions = { zoom: cycleZoom, contrast: cycleStretch, invert: toggleInvert };
    var tools = document.querySelectorAll("#stamp-tools [data-stamp-tool][data-key]");
    for (var i = 0; i < tools.length; i++) {
      if (tools[i].dataset.key === key) {
        event.preventDefault();
        actions[tools[i].dataset.stampTool]();
        return;
      }
    }
  });

  // Pinch on a touch screen: spreading two fingers over the stamps zooms in a step, pinching zooms
  // out. The stamps' touch-action (skyvote.css) leaves one-finger scrolling to the browser.
  var pinch = null;
  function spread(touches) {
    return Math.hypot(touches[0].clientX - touches[1].clientX, touches[0].clientY - touches[1].clientY);
  }
  document.addEventListener("touchstart", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    pinch = event.touches.length === 2 && target && target.closest(".triplet") ? spread(event.touches) : null;
  }, { passive: true });
  document.addEventListener("touchmove", function (event) {
    if (pinch === null || event.touches.length !== 2) return;
    event.preventDefault();
    var ratio = spread(event.touches) / pinch;
    if (ratio > 1.3 || ratio < 0.77) {
      zoomBy(ratio > 1 ? 1 : -1);
      pinch = spread(event.touches);
    }
  }, { passive: false });
  document.addEventListener("touchend", function (event) {
    if (event.touches.length < 2) pinch = null;
  }, { passive: true });
})();

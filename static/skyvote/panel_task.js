// Panel task page: a 429 (answering too fast) carries the same task with a message: show it
// instead of dropping it, as htmx does with error responses by default.
document.body.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr.status === 429) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// While the instructions are open, keys belong to the dialog (Esc closes it), not to the task
// underneath: stop them before the task page's own key handlers (classify.js, similarity.js) see them.
window.addEventListener("keydown", function (event) {
  var help = document.getElementById("panel-help");
  if (help && help.open && event.key !== "Escape") event.stopPropagation();
}, true);

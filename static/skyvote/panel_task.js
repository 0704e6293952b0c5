// Panel task page: a 429 (answering too fast) carries the same task with a message: show it
// instead of dropping it, as htmx does with error responses by default.
document.body.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr.status === 429) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// Site-wide behaviour that templates ask for with data- attributes, so no page needs inline code
// (the Content-Security-Policy allows scripts from our static files only):
//   data-show-dialog="ID"    a button that opens the <dialog> ID
//   data-close-dialog="ID"   a form whose submission closes the <dialog> ID
//   data-select-on-click     a read-only input that selects its text when clicked (keys, links)
//   data-copy="TEXT"         a button that copies TEXT to the clipboard
//   data-history-back        a button that goes back one page
//   data-height="PERCENT"    a bar whose height is set here (style attributes are blocked too)
//   data-swap-errors         an htmx form whose 4xx answers (the form with its error) are swapped in
// Listeners sit on the document, so content that htmx swaps in works without re-binding.
(function () {
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var opener = target.closest("[data-show-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.showDialog);
      if (dialog && dialog.showModal && !dialog.open) dialog.showModal();
      return;
    }
    var selectable = target.closest("[data-select-on-click]");
    if (selectable && selectable.select) {
      selectable.select();
      return;
    }
    var copier = target.closest("[data-copy]");
    if (copier) {
      if (navigator.clipboard) navigator.clipboard.writeText(copier.dataset.copy);
      return;
    }
    if (target.closest("[data-history-back]")) history.back();
  });

  // Capture phase: runs even where another listener stops the submit event from bubbling.
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.dataset.closeDialog) return;
      var dialog = document.getElementById(form.dataset.closeDialog);
      if (dialog && dialog.open) dialog.close();
    },
    true
  );

  // htmx does not swap 4xx answers; a form that answers a refused request with the form and its
  // error (status 400) asks for it to be shown anyway.
  document.addEventListener("htmx:beforeSwap", function (event) {
    // detail.elt is the swap's target; the element that sent the request is requestConfig.elt.
    var elt = event.detail.requestConfig ? event.detail.requestConfig.elt : null;
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status >= 400 && status < 500 && elt instanceof Element && elt.closest("[data-swap-errors]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  function setHeights(root) {
    var bars = (root || document).querySelectorAll("[data-height]");
    for (var i = 0; i < bars.length; i++) bars[i].style.height = parseFloat(bars[i].dataset.height) + "%";
  }
  document.addEventListener("DOMContentLoaded", function () { setHeights(document); });
  document.addEventListener("htmx:load", function (event) { setHeights(event.target); });
})();

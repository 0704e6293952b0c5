// The Gems page (templates/gems/gems.html), keyboard first like the classify page: j / k move the
// focused row, 0–5 rate it (i = interesting = 5, n = not = 0) through its row's button (htmx posts
// the rating), and the focus moves on to the next row. Keys typed into fields are left alone.
(function () {
  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-gem-row]"));
  }

  function current() {
    return document.querySelector("[data-gem-row].focused");
  }

  function focusRow(row) {
    if (!row) return;
    var old = current();
    if (old) old.classList.remove("focused");
    row.classList.add("focused");
    row.focus({ preventScroll: false });
  }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var index = all.indexOf(current());
    var next = index === -1 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    focusRow(all[next]);
  }

  function rate(value) {
    var row = current();
    if (!row) return;
    var button = row.querySelector('[data-rating="' + value + '"]');
    if (!button) return;
    button.click();
    move(1);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
    var list = document.querySelector("[data-testid=gem-list]");
    if (!list) return;
    var key = event.key.toLowerCase();
    if (key === "j") move(1);
    else if (key === "k") move(-1);
    else if (list.dataset.canRate && /^[0-5]$/.test(key)) rate(key);
    else if (list.dataset.canRate && key === "i") rate("5");
    else if (list.dataset.canRate && key === "n") rate("0");
    else return;
    event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    focusRow(rows()[0]);
    rows().forEach(function (row) {
      row.addEventListener("click", function () { focusRow(row); });
    });
  });
})();

// The workflow builder's forms (templates/core/workflows/): show only the fields that apply.
//   data-rule-section="count swap"  shown while the retirement rule select has one of these values
//   data-kind-section="similarity"  shown while the workflow kind select (new workflows) has this value
// Sections are hidden with the `hidden` attribute: no inline styles under the Content-Security-Policy.
// Without JavaScript every section shows and the server ignores fields that do not apply.
(function () {
  function toggle(form, selectName, attribute) {
    var select = form.querySelector('select[name="' + selectName + '"]');
    if (!select) return;
    var sections = form.querySelectorAll("[" + attribute + "]");
    var value = select.value;
    for (var i = 0; i < sections.length; i++) {
      var wanted = sections[i].getAttribute(attribute).split(" ");
      sections[i].hidden = wanted.indexOf(value) === -1;
    }
  }
  function update() {
    var forms = document.querySelectorAll("form[data-rule-form], form[data-kind-form]");
    for (var i = 0; i < forms.length; i++) {
      toggle(forms[i], "retirement_rule", "data-rule-section");
      toggle(forms[i], "kind", "data-kind-section");
    }
  }
  document.addEventListener("DOMContentLoaded", update);
  document.addEventListener("change", function (event) {
    var name = event.target && event.target.name;
    if (name === "retirement_rule" || name === "kind") update();
  });
})();

// Progressive enhancement only: every form works without this file.
document.documentElement.classList.add("js");

// A task's checkbox submits its form at once (mouse, touch, or the space bar);
// without JavaScript a "Done" button next to it does the same.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.hasAttribute("data-autosubmit")) return;
  if (box.checked && box.form) box.form.requestSubmit();
});

// A pressed button shows that its form is on its way.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  form.querySelectorAll("button[type=submit]").forEach(function (button) {
    button.dataset.busy = "true";
  });
});

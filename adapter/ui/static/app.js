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

// A "Copy" button puts its feed URL on the clipboard and says so; without the
// clipboard API (plain http other than localhost) it selects the URL to copy by hand.
document.addEventListener("click", function (event) {
  var button = event.target instanceof Element && event.target.closest("button[data-copy]");
  if (!button) return;
  var input = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById(button.getAttribute("aria-describedby"));
  if (!input) return;
  function say(text) { if (status) status.textContent = text; }
  function byHand() { input.focus(); input.select(); say("Selected: press Ctrl+C or ⌘C"); }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(function () { say("Copied"); }, byHand);
  } else {
    byHand();
  }
});

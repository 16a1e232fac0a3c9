// Opens a cell's evidence in a dialog. No network, no framework.
(function () {
  "use strict";
  var dialog = document.getElementById("evidence-dialog");
  var body = document.getElementById("evidence-body");
  function open(id) {
    var source = document.getElementById(id);
    if (!source) { return; }
    body.replaceChildren(source.cloneNode(true));
    body.firstChild.removeAttribute("id");
    dialog.showModal();
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-evidence]");
    if (button) { open(button.getAttribute("data-evidence")); }
  });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) { dialog.close(); }
  });
}());

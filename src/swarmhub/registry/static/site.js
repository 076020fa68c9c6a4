// Copy buttons: an enhancement only. Without JavaScript the buttons stay hidden and the text stays selectable.
"use strict";

function selectAndCopy(element) {
  var range = document.createRange();
  range.selectNodeContents(element);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  try {
    return document.execCommand("copy");
  } catch (error) {
    return false;
  }
}

document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var target = document.getElementById(button.getAttribute("data-copy"));
  if (!target) {
    return;
  }
  var label = button.textContent;
  var done = function (ok) {
    button.textContent = ok ? "Copied" : "Press Ctrl+C";
    window.setTimeout(function () { button.textContent = label; }, 1500);
  };
  button.hidden = false;
  button.addEventListener("click", function () {
    var text = target.tagName === "A" ? target.href : target.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { done(true); },
        function () { done(selectAndCopy(target)); }
      );
    } else {
      done(selectAndCopy(target));
    }
  });
});

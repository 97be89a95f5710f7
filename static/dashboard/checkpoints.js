// Checkpoint time travel pages: copy a JSON path, filter the state tree, confirm a
// resume, validate the fork's JSON before it is sent. No inline scripts (CSP).
(function () {
  "use strict";

  function say(text) {
    var status = document.getElementById("copied");
    if (status) status.textContent = text;
  }

  function copy(path) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(path).then(
        function () { say("Copied " + path); },
        function () { fallbackCopy(path); }
      );
    } else {
      fallbackCopy(path);
    }
  }

  function fallbackCopy(path) {
    var input = document.createElement("textarea");
    input.value = path;
    input.setAttribute("readonly", "");
    input.style.position = "fixed";
    input.style.opacity = "0";
    document.body.appendChild(input);
    input.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(input);
    say(ok ? "Copied " + path : "Path: " + path);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".jt-copy") : null;
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();  // a copy button inside <summary> must not fold the node
    copy(button.getAttribute("data-path"));
  });

  function ownText(li) {
    var parts = [];
    var key = li.querySelector(":scope > .jt-key, :scope > details > summary > .jt-key");
    if (key) parts.push(key.textContent);
    var value = li.querySelector(":scope > .jt-v");
    if (value) parts.push(value.textContent);
    return parts.join(" ").toLowerCase();
  }

  function filterTree(tree, query) {
    var items = Array.prototype.slice.call(tree.querySelectorAll("li"));
    var needle = query.trim().toLowerCase();
    var hits = 0;
    // Children follow their parents in document order: walk backwards so a parent
    // knows whether any descendant matched.
    for (var i = items.length - 1; i >= 0; i--) {
      var li = items[i];
      if (!needle) {
        li.hidden = false;
        li.classList.remove("jt-hit");
        continue;
      }
      var own = ownText(li).indexOf(needle) !== -1;
      var below = li.querySelector("li[data-hit]") !== null;
      li.classList.toggle("jt-hit", own);
      if (own) hits++;
      if (own || below) {
        li.setAttribute("data-hit", "");
        li.hidden = false;
        var details = li.querySelector(":scope > details");
        if (details && below) details.open = true;
      } else {
        li.removeAttribute("data-hit");
        li.hidden = true;
      }
    }
    if (needle) items.forEach(function (li) { li.removeAttribute("data-hit"); });
    say(needle ? hits + " match" + (hits === 1 ? "" : "es") + " in the tree" : "");
  }

  function setUpFilter() {
    var input = document.querySelector("[data-filter-tree]");
    if (!input) return;
    var tree = document.getElementById(input.getAttribute("data-filter-tree"));
    if (!tree) return;
    var timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { filterTree(tree, input.value); }, 150);
    });
    if (input.value) filterTree(tree, input.value);
  }

  function setUpConfirm() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function setUpEditor() {
    var editor = document.querySelector("textarea.json-editor");
    if (!editor) return;
    var status = document.getElementById("json-status");
    function check() {
      try {
        JSON.parse(editor.value.trim() ? editor.value : "null");
        editor.setCustomValidity("");
        editor.removeAttribute("aria-invalid");
        if (status) { status.textContent = "valid JSON"; status.className = "ok"; }
        return true;
      } catch (e) {
        editor.setCustomValidity(e.message);
        editor.setAttribute("aria-invalid", "true");
        if (status) { status.textContent = "not valid JSON: " + e.message; status.className = "error"; }
        return false;
      }
    }
    editor.addEventListener("input", check);
    editor.form.addEventListener("submit", function (event) {
      if (!check()) { event.preventDefault(); editor.focus(); }
    });
  }

  function start() { setUpFilter(); setUpConfirm(); setUpEditor(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

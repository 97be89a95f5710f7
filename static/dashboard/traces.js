// Trace page: load a span's details into the side panel without leaving the page,
// and expand or collapse every subtree. Without JS the links reload the page.
(() => {
  "use strict";
  const waterfall = document.getElementById("waterfall");
  const panel = document.getElementById("span-panel");
  if (!waterfall || !panel) return;
  const prefix = waterfall.dataset.spanUrl;

  waterfall.addEventListener("click", async (event) => {
    const link = event.target.closest("a.wf-link");
    if (!link) return;
    const row = link.closest("[data-span]");
    if (!row) return;
    event.preventDefault();
    if (waterfall.dataset.inline) {  // an uploaded file: every panel is in the page
      const template = document.getElementById(`span-${row.dataset.span}`);
      if (!template) return;
      panel.replaceChildren(template.content.cloneNode(true));
      waterfall.querySelectorAll(".wf-selected").forEach((el) => el.classList.remove("wf-selected"));
      row.classList.add("wf-selected");
      return;
    }
    try {
      const response = await fetch(`${prefix}${row.dataset.span}/`, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      panel.innerHTML = await response.text();  // server-rendered, autoescaped partial
      waterfall.querySelectorAll(".wf-selected").forEach((el) => el.classList.remove("wf-selected"));
      row.classList.add("wf-selected");
      history.replaceState(null, "", link.href);
    } catch (_error) {
      window.location.assign(link.href);
    }
  });

  document.querySelectorAll("[data-expand]").forEach((button) => {
    button.addEventListener("click", () => {
      const open = button.dataset.expand === "all";
      waterfall.querySelectorAll("details").forEach((node) => { node.open = open; });
    });
  });
})();

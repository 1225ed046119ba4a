// custos console: live incident progress over server-sent events. No build
// step; the pages work without it (they show the state as of loading).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const panel of document.querySelectorAll("[data-events]")) {
    const source = new EventSource(panel.dataset.events);
    source.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      for (const [state, n] of Object.entries(p.states)) {
        const cell = panel.querySelector(`[data-state="${state}"]`);
        if (cell) cell.textContent = n;
      }
      const shown = document.getElementById("incident-state");
      if (shown) shown.textContent = p.incident_state;
      if (p.done) source.close();
    });
  }
});

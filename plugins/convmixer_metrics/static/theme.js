// Light or dark, as the Airflow UI around this page shows it. Loaded in <head> (not deferred) so the first paint
// already has the right colours.
//
// Airflow 3's UI (next-themes) puts class "dark" or "light" on its <html> and keeps the user's choice in
// localStorage "theme" ("light", "dark" or "system"). Embedded, this page is a same-origin iframe, so it reads the
// class from the UI's <html> and watches it; opened on its own it reads the stored choice (same origin, same
// storage), and "system" or nothing means the OS preference.
(function () {
  "use strict";

  const STORAGE_KEY = "theme";
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const listeners = [];

  function airflowRoot() {
    try {
      return window.top !== window ? window.top.document.documentElement : null;
    } catch (err) {
      return null; // not inside the Airflow UI (another origin)
    }
  }

  function current() {
    const root = airflowRoot();
    if (root && root.classList.contains("dark")) return "dark";
    if (root && root.classList.contains("light")) return "light";
    let stored = null;
    try {
      stored = window.localStorage.getItem(STORAGE_KEY);
    } catch (err) {
      stored = null;
    }
    if (stored === "dark" || stored === "light") return stored;
    return systemDark.matches ? "dark" : "light";
  }

  function apply() {
    const theme = current();
    if (document.documentElement.dataset.theme === theme) return;
    document.documentElement.dataset.theme = theme;
    for (const listener of listeners) listener(theme);
  }

  apply();
  const root = airflowRoot();
  if (root) new MutationObserver(apply).observe(root, { attributes: true, attributeFilter: ["class"] });
  window.addEventListener("storage", (event) => {
    if (event.key === STORAGE_KEY) apply();
  });
  systemDark.addEventListener("change", apply);

  // page.js redraws its charts with the new colours.
  window.metricsTheme = {
    current: () => document.documentElement.dataset.theme,
    onChange: (listener) => listeners.push(listener),
  };
})();

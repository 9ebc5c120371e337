// What the history, run and compare pages share: DOM helpers, number formats, the Airflow UI around the page
// (links that open in it), and requests with the page's error messages. Loaded before each page's own script.
// Every value from the server goes into the page through textContent / DOM properties, never as HTML.
(function () {
  "use strict";

  const MOUNT = "/convmixer-metrics/";

  // --- small helpers -----------------------------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "–";
    const number = Number(value);
    return Number.isFinite(number) ? number.toFixed(digits) : String(value);
  }

  function fmtSigned(value, digits) {
    const text = fmt(value, digits);
    return Number(value) > 0 ? "+" + text : text;
  }

  function fmtP(value) {
    if (value === null || value === undefined) return "–";
    const number = Number(value);
    return number < 0.001 ? number.toExponential(1) : number.toFixed(3);
  }

  function fmtDate(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toISOString().slice(0, 16).replace("T", " ");
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function statusBadge(status) {
    return el("span", status, "status status-" + String(status).replace(/[^a-z]/g, ""));
  }

  // Who accepted the run as its fingerprint's baseline, when and why (metrics.rebaseline's columns).
  function acceptanceText(row) {
    if (!row.rebaselined_at) return null;
    return "accepted as baseline by " + (row.rebaselined_by || "?") + ", " + fmtDate(row.rebaselined_at) +
      " UTC: " + (row.rebaseline_reason || "");
  }

  function runPageUrl(id) {
    return "run?id=" + encodeURIComponent(id);
  }

  function comparePageUrl(a, b) {
    return "compare?a=" + encodeURIComponent(a) + "&b=" + encodeURIComponent(b);
  }

  // --- the Airflow UI around the page ----------------------------------------------------------------------------

  // Airflow may be served below a path prefix ([api] base_url); links into its UI need that prefix.
  function airflowBase() {
    const path = window.location.pathname;
    const at = path.lastIndexOf(MOUNT);
    return at >= 0 ? path.slice(0, at) : "";
  }

  function dagRunUrl(dagId, runId) {
    return airflowBase() + "/dags/" + encodeURIComponent(dagId) + "/runs/" + encodeURIComponent(runId);
  }

  // A task instance's page (its log is the first tab); a mapped task lists its instances (one per batch size).
  function taskUrl(dagId, runId, taskId, mapped) {
    return dagRunUrl(dagId, runId) + "/tasks/" + encodeURIComponent(taskId) + (mapped ? "/mapped" : "");
  }

  function airflowWindow() {
    try {
      const top = window.top;
      return top && top !== window && top.document ? top : null;
    } catch (err) {
      return null; // not the Airflow UI around us (another origin)
    }
  }

  // The UI embeds this page in a sandboxed iframe without allow-top-navigation, so neither target="_top" nor
  // top.location may navigate it. The iframe is same-origin, though: push the URL onto the UI's history and
  // tell its router, which then shows the page as if the user had clicked a link in the UI itself.
  function openInAirflow(url) {
    const top = airflowWindow();
    if (top) {
      const previous = top.history.state;
      const idx = previous && Number.isInteger(previous.idx) ? previous.idx + 1 : undefined;
      top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx }, "", url);
      top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
      return;
    }
    window.location.assign(url);
  }

  // A page outside the UI's router (the login page): a link clicked in the UI's own document navigates it.
  function openOutsideAirflow(url) {
    const top = airflowWindow();
    if (!top) {
      window.location.assign(url);
      return;
    }
    const link = top.document.createElement("a");
    link.href = url;
    top.document.body.appendChild(link);
    link.click();
    link.remove();
  }

  function plainClick(event) {
    return event.button === 0 && !event.ctrlKey && !event.metaKey && !event.shiftKey && !event.altKey;
  }

  // A link into the Airflow UI (a DAG run, a task log): opened in the UI around this page.
  function airflowLink(text, url, title) {
    const link = el("a", text);
    link.href = url;
    if (title) link.title = title;
    link.addEventListener("click", (event) => {
      if (!plainClick(event)) return;
      event.preventDefault();
      openInAirflow(link.getAttribute("href"));
    });
    return link;
  }

  // This page's query string, kept in the UI's address bar too: the UI shows this page at /plugin/<route><this
  // page's path> and, on a reload, gives the iframe the rest of its own URL.
  function mirrorUrl(search) {
    if (search === window.location.search) return;
    window.history.replaceState(window.history.state, "", window.location.pathname + search);
    const top = airflowWindow();
    if (top && top.location.pathname.endsWith(window.location.pathname)) {
      top.history.replaceState(top.history.state, "", top.location.pathname + search);
    }
  }

  // --- requests and errors ---------------------------------------------------------------------------------------

  class RequestError extends Error {
    constructor(message, loginUrl, status) {
      super(message);
      this.loginUrl = loginUrl;
      this.status = status;
    }
  }

  // labelFor names a query parameter as the form does ("since" → "From"); pages without a form pass none.
  function describeError(status, body, labelFor) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) { // FastAPI's validation errors: name the field as the form does
      detail = detail.map((d) => {
        const name = Array.isArray(d.loc) ? d.loc[d.loc.length - 1] : "";
        return (name ? (labelFor ? labelFor(name) : name) + ": " : "") + d.msg;
      }).join("; ");
    }
    if (status === 401) return "Your Airflow session has ended (" + (detail || "not signed in") + ").";
    if (status === 403) return "Your Airflow user may not do this (" + (detail || "forbidden") + ").";
    if (status === 404) return detail || "Not found.";
    if (status === 422) return detail || "These inputs are not valid.";
    return detail || "The request failed (HTTP " + status + ").";
  }

  async function request(path, options, labelFor) {
    const response = await fetch(path, { credentials: "same-origin", ...options });
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      throw new RequestError(describeError(response.status, body, labelFor), body && body.login_url, response.status);
    }
    return body;
  }

  function getJson(path, params, labelFor) {
    const query = params && params.toString() ? "?" + params.toString() : "";
    return request(path + query, { headers: { Accept: "application/json" } }, labelFor);
  }

  // A write: JSON body and the page's CSRF token in a header (the server refuses a cookie-only write).
  function postJson(path, body, csrfToken) {
    return request(path, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrfToken || "" },
      body: JSON.stringify(body),
    });
  }

  function showError(err, boxId) {
    const box = document.getElementById(boxId || "error");
    box.replaceChildren(el("span", err.message));
    if (err.loginUrl) {
      const link = el("a", "Sign in to Airflow");
      link.href = err.loginUrl + (err.loginUrl.includes("?") ? "&" : "?") + "next=" +
        encodeURIComponent((airflowWindow() || window).location.href);
      link.addEventListener("click", (event) => {
        if (!plainClick(event)) return;
        event.preventDefault();
        openOutsideAirflow(link.href);
      });
      box.append(" ", link);
    }
    box.hidden = false;
  }

  function clearError(boxId) {
    const box = document.getElementById(boxId || "error");
    box.replaceChildren();
    box.hidden = true;
  }

  window.metricsCommon = {
    el, show, fmt, fmtSigned, fmtP, fmtDate, cssVar, statusBadge, acceptanceText, runPageUrl,
    comparePageUrl, dagRunUrl, taskUrl, airflowWindow, openInAirflow, plainClick, airflowLink, mirrorUrl,
    RequestError, getJson, postJson, showError, clearError,
  };
})();

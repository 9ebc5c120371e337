// ConvMixer metrics page: fetches JSON from this plugin's authenticated endpoints and renders it.
// Every value from the server goes into the page through textContent / DOM properties, never as HTML.
(function () {
  "use strict";

  const FILTER_NAMES = ["model", "backend", "device", "batch_size", "status", "since", "until"];
  // Which list of /api/filters (the store's distinct_values) fills which filter menu.
  const MENU_KEYS = {
    model: "models", backend: "backends", device: "devices", batch_size: "batch_sizes", status: "statuses",
  };
  const PALETTE = ["#017cee", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#bcbd22"];
  const MOUNT = "/convmixer-metrics/";

  const form = document.getElementById("filters");
  const state = { limit: 25, offset: 0, request: 0 };
  const charts = {};

  // Airflow may be served below a path prefix ([api] base_url); DAG run links need that prefix.
  function airflowBase() {
    const path = window.location.pathname;
    const at = path.lastIndexOf(MOUNT);
    return at >= 0 ? path.slice(0, at) : "";
  }

  function dagRunUrl(dagId, runId) {
    return airflowBase() + "/dags/" + encodeURIComponent(dagId) + "/runs/" + encodeURIComponent(runId);
  }

  // The UI embeds this page in a sandboxed iframe without allow-top-navigation, so neither target="_top" nor
  // top.location may navigate it. The iframe is same-origin, though: push the URL onto the UI's history and
  // tell its router, which then shows the DAG run as if the user had clicked a link in the UI itself.
  function openInAirflow(url) {
    const top = window.top;
    if (top && top !== window) {
      try {
        const state = top.history.state;
        const idx = state && Number.isInteger(state.idx) ? state.idx + 1 : undefined;
        top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx }, "", url);
        top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
        return;
      } catch (err) {
        // not the Airflow UI around us (another origin): open the run in this frame instead
      }
    }
    window.location.assign(url);
  }

  function onRunLinkClick(event) {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    openInAirflow(event.currentTarget.getAttribute("href"));
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
  }

  function filterParams() {
    const params = new URLSearchParams();
    const data = new FormData(form);
    for (const name of FILTER_NAMES) {
      // Date inputs give bare dates (UTC days); the server counts "until" through the end of its day.
      const value = (data.get(name) || "").trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  function hasFilters() {
    return [...filterParams().keys()].length > 0;
  }

  async function getJson(path, params) {
    const response = await fetch(path + (params ? "?" + params.toString() : ""), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      throw new Error(describeError(response.status, body));
    }
    return body;
  }

  function describeError(status, body) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) {
      detail = detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("; ");
    }
    if (status === 401 || status === 403) {
      return "Not authorised (" + status + "): " + (detail || "sign in to Airflow again") + ".";
    }
    return (detail || "Request failed") + " (HTTP " + status + ")";
  }

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    const box = document.getElementById("error");
    box.textContent = "";
    box.hidden = true;
  }

  function fillMenus(values) {
    for (const [name, key] of Object.entries(MENU_KEYS)) {
      const select = form.elements.namedItem(name);
      const options = values && Array.isArray(values[key]) ? values[key] : [];
      const current = select.value;
      while (select.options.length > 1) select.remove(1);
      for (const value of options) {
        if (value === null || value === undefined || value === "") continue;
        const option = el("option", value);
        option.value = String(value);
        select.appendChild(option);
      }
      select.value = current;
    }
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "–";
    const number = Number(value);
    return Number.isFinite(number) ? number.toFixed(digits) : String(value);
  }

  function fmtDate(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toISOString().slice(0, 16).replace("T", " ");
  }

  function renderTable(rows) {
    const body = document.querySelector("#runs-table tbody");
    body.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.runId = row.run_id;
      tr.appendChild(el("td", fmtDate(row.logical_date)));
      const runCell = el("td", null, "run");
      if (row.dag_id) {
        const link = el("a", row.run_id);
        link.href = dagRunUrl(row.dag_id, row.run_id);
        link.addEventListener("click", onRunLinkClick);
        link.title = row.dag_id + " / " + row.run_id;
        runCell.appendChild(link);
      } else {
        runCell.textContent = row.run_id;
      }
      tr.appendChild(runCell);
      tr.appendChild(el("td", row.model_variant));
      tr.appendChild(el("td", row.backend));
      tr.appendChild(el("td", row.device || "–", "wrap"));
      tr.appendChild(el("td", row.toolkit_version || "–", "wrap"));
      tr.appendChild(el("td", row.batch_size, "num"));
      tr.appendChild(el("td", row.image_count === null ? "–" : row.image_count, "num"));
      tr.appendChild(el("td", fmt(row.top1, 2), "num"));
      tr.appendChild(el("td", fmt(row.top5, 2), "num"));
      tr.appendChild(el("td", fmt(row.throughput, 1), "num"));
      tr.appendChild(el("td", fmt(row.latency_p99_ms, 2), "num"));
      const statusCell = el("td");
      const badge = el("span", row.status, "status status-" + String(row.status).replace(/[^a-z]/g, ""));
      if (Array.isArray(row.gate_reasons) && row.gate_reasons.length) badge.title = row.gate_reasons.join("\n");
      statusCell.appendChild(badge);
      tr.appendChild(statusCell);
      body.appendChild(tr);
    }
  }

  function renderPager(total, shown) {
    const first = total === 0 ? 0 : state.offset + 1;
    document.getElementById("page-info").textContent =
      "Runs " + first + "–" + (state.offset + shown) + " of " + total;
    document.getElementById("prev").disabled = state.offset === 0;
    document.getElementById("next").disabled = state.offset + shown >= total;
  }

  function seriesLabel(group, withModel) {
    const label = "bs " + group.batch_size + " · " + group.backend + " · " + (group.device || "?");
    return withModel ? group.model_variant + " · " + label : label;
  }

  // How a run's point looks: regressed runs are big red triangles, failed runs grey crosses, pending (not gated)
  // runs amber diamonds.
  const MARKS = {
    regressed: { style: "triangle", radius: 8, fill: "#e53e3e", border: "#9b2c2c" },
    failed: { style: "crossRot", radius: 7, fill: "#718096", border: "#718096" },
    pending: { style: "rectRot", radius: 6, fill: "#ecc94b", border: "#744210" },
  };

  function mark(ctx, key, fallback) {
    const status = ctx.raw && ctx.raw.run && ctx.raw.run.status;
    return MARKS[status] ? MARKS[status][key] : fallback;
  }

  function datasetsFor(groups, valueKey, baselineKey) {
    const datasets = [];
    const withModel = new Set(groups.map((g) => g.model_variant)).size > 1;
    groups.forEach((group, index) => {
      const color = PALETTE[index % PALETTE.length]; // by series, so a series has one colour in both charts
      const points = (group.points || [])
        .filter((p) => p[valueKey] !== null && p[valueKey] !== undefined)
        .map((p) => ({ x: Date.parse(p.logical_date), y: p[valueKey], run: p }));
      if (!points.length) return; // only failed runs without numbers: nothing to draw (the table lists them)
      datasets.push({
        label: seriesLabel(group, withModel),
        data: points,
        borderColor: color,
        backgroundColor: color,
        pointStyle: (ctx) => mark(ctx, "style", "circle"),
        pointRadius: (ctx) => mark(ctx, "radius", 4),
        pointHoverRadius: 9,
        pointBackgroundColor: (ctx) => mark(ctx, "fill", color),
        pointBorderColor: (ctx) => mark(ctx, "border", color),
        tension: 0,
      });
      const baseline = (group.points || [])
        .filter((p) => p[baselineKey] !== null && p[baselineKey] !== undefined)
        .map((p) => ({ x: Date.parse(p.logical_date), y: p[baselineKey] }));
      if (baseline.length) {
        datasets.push({
          label: seriesLabel(group, withModel) + " baseline",
          data: baseline,
          borderColor: color,
          borderDash: [6, 4],
          borderWidth: 1.5,
          pointRadius: 0,
          pointHitRadius: 0,
          stepped: "before",
          isBaseline: true,
        });
      }
    });
    return datasets;
  }

  const HOUR = 3600 * 1000;
  const DAY = 24 * HOUR;
  const TIME_STEPS = [HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 365 * DAY];

  // A linear axis of epoch milliseconds with ticks on whole UTC hours/days (multiples of the step), so a label
  // sits exactly under the runs of that day; no date adapter needed.
  function timeAxis(datasets) {
    const xs = datasets.flatMap((d) => d.data.map((p) => p.x)).filter(Number.isFinite);
    if (!xs.length) return { type: "linear" };
    const first = Math.min(...xs);
    const last = Math.max(...xs);
    const step = TIME_STEPS.find((s) => (last - first) / s <= 7) || TIME_STEPS[TIME_STEPS.length - 1];
    const ticks = [];
    for (let v = Math.ceil((first - step / 2) / step) * step; v <= last + step / 2; v += step) ticks.push({ value: v });
    return {
      type: "linear",
      min: first - step / 2,
      max: last + step / 2,
      afterBuildTicks: (axis) => {
        axis.ticks = ticks;
      },
      ticks: {
        callback: (v) => {
          const iso = new Date(v).toISOString();
          return step < DAY ? iso.slice(5, 16).replace("T", " ") : iso.slice(0, 10);
        },
      },
    };
  }

  function drawChart(canvasId, groups, valueKey, baselineKey, unit, digits) {
    if (charts[canvasId]) charts[canvasId].destroy();
    const canvas = document.getElementById(canvasId);
    const datasets = datasetsFor(groups, valueKey, baselineKey);
    canvas.dataset.points = String(
      datasets.filter((d) => !d.isBaseline).reduce((sum, d) => sum + d.data.length, 0));
    if (typeof window.Chart !== "function") {
      showError("The chart library did not load (static/vendor/chart.js); the table below is still complete.");
      return;
    }
    charts[canvasId] = new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: true },
        scales: {
          x: timeAxis(datasets),
          y: { title: { display: true, text: unit } },
        },
        plugins: {
          legend: {
            labels: {
              usePointStyle: true,
              pointStyle: "circle",
              boxWidth: 8,
              boxHeight: 8,
              filter: (item, data) => !data.datasets[item.datasetIndex].isBaseline,
            },
          },
          tooltip: {
            filter: (item) => !item.dataset.isBaseline,
            callbacks: {
              title: (items) => (items.length ? fmtDate(items[0].raw.run.logical_date) : ""),
              label: (item) => item.dataset.label + ": " + fmt(item.parsed.y, digits) + " " + unit,
              afterLabel: (item) => {
                const run = item.raw.run;
                const lines = ["run: " + run.run_id, "status: " + run.status];
                if (run[baselineKey] !== null && run[baselineKey] !== undefined) {
                  lines.push("baseline: " + fmt(run[baselineKey], digits) + " " + unit);
                }
                if (run.dag_id) lines.push("click to open the DAG run");
                return lines;
              },
            },
          },
        },
        onHover: (event, elements) => {
          event.native.target.style.cursor = elements.length ? "pointer" : "default";
        },
        onClick: (event, elements, chart) => {
          const hit = elements.find((e) => !chart.data.datasets[e.datasetIndex].isBaseline);
          if (!hit) return;
          const run = chart.data.datasets[hit.datasetIndex].data[hit.index].run;
          if (run && run.dag_id) openInAirflow(dagRunUrl(run.dag_id, run.run_id));
        },
      },
    });
  }

  async function refresh() {
    const params = filterParams();
    document.getElementById("csv").href = "api/runs.csv" + (params.toString() ? "?" + params.toString() : "");
    const pageParams = new URLSearchParams(params);
    pageParams.set("limit", String(state.limit));
    pageParams.set("offset", String(state.offset));
    const request = ++state.request;
    show("loading", true);
    try {
      const [table, series] = await Promise.all([getJson("api/runs", pageParams), getJson("api/series", params)]);
      if (request !== state.request) return; // a newer refresh (the user changed a filter again) wins
      clearError();
      const empty = table.total === 0;
      show("empty", empty && !hasFilters());
      show("no-match", empty && hasFilters());
      show("runs", !empty);
      show("charts", !empty);
      renderTable(table.rows);
      renderPager(table.total, table.rows.length);
      if (!empty) {
        drawChart("chart-top1", series.series, "top1", "baseline_top1", "%", 2);
        drawChart("chart-throughput", series.series, "throughput", "baseline_throughput", "img/s", 1);
      }
      document.body.dataset.state = empty ? (hasFilters() ? "no-match" : "empty") : "loaded";
    } catch (err) {
      if (request !== state.request) return;
      for (const id of ["empty", "no-match", "runs", "charts"]) show(id, false);
      showError(err.message);
      document.body.dataset.state = "error";
    } finally {
      if (request === state.request) show("loading", false);
    }
  }

  async function start() {
    try {
      fillMenus(await getJson("api/filters"));
    } catch (err) {
      showError(err.message);
      document.body.dataset.state = "error";
      show("loading", false);
      return;
    }
    await refresh();
  }

  form.addEventListener("change", () => {
    state.offset = 0;
    refresh();
  });
  form.addEventListener("reset", () => {
    state.offset = 0;
    window.setTimeout(refresh, 0); // after the browser has cleared the fields
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    refresh();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.offset += state.limit;
    refresh();
  });
  document.getElementById("page-size").addEventListener("change", (event) => {
    state.limit = Number(event.target.value);
    state.offset = 0;
    refresh();
  });

  start();
})();

// ConvMixer metrics history: fetches JSON from this plugin's authenticated endpoints and renders it (helpers in
// common.js). Every value from the server goes into the page through textContent / DOM properties, never as HTML.
(function () {
  "use strict";

  const {
    el, show, fmt, fmtDate, cssVar, statusBadge, acceptanceText, runPageUrl, comparePageUrl,
    airflowLink, dagRunUrl, mirrorUrl, getJson, showError, clearError,
  } = window.metricsCommon;

  const FILTER_NAMES = ["model", "backend", "device", "batch_size", "status", "since", "until"];
  // Which list of /api/filters (the store's distinct_values) fills which filter menu.
  const MENU_KEYS = {
    model: "models", backend: "backends", device: "devices", batch_size: "batch_sizes", status: "statuses",
  };
  // The two charts: the row field they plot, its baseline field, unit and decimals. The key is also the gate's
  // metric name, which the server lists in a row's regressed_on.
  const CHARTS = {
    top1: { canvas: "chart-top1", baseline: "baseline_top1", unit: "%", digits: 2 },
    throughput: { canvas: "chart-throughput", baseline: "baseline_throughput", unit: "img/s", digits: 1 },
  };
  // A series keeps its colour and marker shape whatever the filters: the server numbers it (slot) among every
  // series in the metrics DB. Triangles, crosses and diamonds are kept for regressed, failed and pending runs.
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#8c564b", "#bcbd22",
    "#7f7f7f"];
  const SHAPES = ["circle", "rect", "rectRounded", "star", "cross"];
  const MARKS = {
    regressed: { style: "triangle", radius: 8, fill: "#e53e3e", border: "#9b2c2c" },
    failed: { style: "crossRot", radius: 7, fill: "#718096", border: "#718096" },
    pending: { style: "rectRot", radius: 6, fill: "#ecc94b", border: "#744210" },
  };
  const DEFAULT_LIMIT = 25;

  const form = document.getElementById("filters");
  const axisSelect = document.getElementById("x-axis");
  // unheld: what the page's URL asked for that the form cannot show, until the user changes the view.
  const state = { limit: DEFAULT_LIMIT, offset: 0, request: 0, series: null, picked: [], unheld: {} };
  const charts = {};

  // --- filters and the URL ---------------------------------------------------------------------------------------

  // The form's own label for a query parameter ("since" → "From"), so messages use the words the user sees.
  function labelFor(name) {
    const field = form.elements.namedItem(name);
    const label = field && field.closest("label");
    return label ? label.firstChild.textContent.trim() : name;
  }

  function filterParams() {
    const params = new URLSearchParams();
    const data = new FormData(form);
    for (const name of FILTER_NAMES) {
      // Date inputs give bare dates (UTC days); the server counts "until" through the end of its day.
      const value = (data.get(name) || "").trim();
      if (value) params.set(name, value);
    }
    // What the page's URL asked for but the form cannot hold (since=notadate): sent as given, so the server's
    // 422 says what is wrong instead of the filter being dropped and every run shown.
    for (const [name, value] of Object.entries(state.unheld)) {
      if (FILTER_NAMES.includes(name)) params.set(name, value);
    }
    return params;
  }

  // The paging the URL asked for that the page's menu does not offer (limit=100000000, offset=-5), likewise.
  function pagingParams(params) {
    const paged = new URLSearchParams(params);
    paged.set("limit", state.unheld.limit !== undefined ? state.unheld.limit : String(state.limit));
    paged.set("offset", state.unheld.offset !== undefined ? state.unheld.offset : String(state.offset));
    return paged;
  }

  function hasFilters() {
    return [...filterParams().keys()].length > 0;
  }

  // Everything the user chose, as this page's query string: reload and a shared link show the same view.
  function viewParams() {
    const params = filterParams();
    if (axisSelect.value !== axisSelect.options[0].value) params.set("x", axisSelect.value);
    if (state.limit !== DEFAULT_LIMIT) params.set("limit", String(state.limit));
    if (state.offset) params.set("offset", String(state.offset));
    for (const name of ["limit", "offset"]) {
      if (state.unheld[name] !== undefined) params.set(name, state.unheld[name]);
    }
    return params;
  }

  // Reload and a shared link show the same view: the query string here and in the UI's address bar.
  function saveView() {
    const query = viewParams().toString();
    mirrorUrl(query ? "?" + query : "");
  }

  function loadView() {
    const params = new URLSearchParams(window.location.search);
    state.unheld = {};
    for (const name of FILTER_NAMES) {
      const value = params.get(name);
      if (!value) continue;
      const field = form.elements.namedItem(name);
      if (field.tagName === "SELECT" && ![...field.options].some((option) => option.value === value)) {
        field.appendChild(el("option", value)).value = value; // not recorded (yet): keep the filter visible
      }
      field.value = value;
      if (field.value !== value) state.unheld[name] = value; // a date input drops what is not a date
    }
    if ([...axisSelect.options].some((option) => option.value === params.get("x"))) axisSelect.value = params.get("x");
    const limit = params.get("limit");
    const pageSize = document.getElementById("page-size");
    if ([...pageSize.options].some((option) => option.value === limit)) {
      state.limit = Number(limit);
      pageSize.value = limit;
    } else if (limit !== null) {
      state.unheld.limit = limit;
    }
    const offset = params.get("offset");
    state.offset = offset !== null && /^\d{1,9}$/.test(offset) ? Number(offset) : 0;
    if (offset !== null && String(state.offset) !== offset) state.unheld.offset = offset;
  }

  function fillMenus(values) {
    for (const [name, key] of Object.entries(MENU_KEYS)) {
      const select = form.elements.namedItem(name);
      for (const value of values && Array.isArray(values[key]) ? values[key] : []) {
        if (value === null || value === undefined || value === "") continue;
        select.appendChild(el("option", value)).value = String(value);
      }
    }
  }

  // --- table -------------------------------------------------------------------------------------------------------

  // The status, then the lines that decided it (the rules that fired, else why it was not judged), at most
  // SHOWN_REASONS of them; the run page has every line.
  const SHOWN_REASONS = 2;

  function statusCell(row) {
    const cell = el("td", null, "status-cell");
    cell.appendChild(statusBadge(row.status));
    const reasons = row.deciding || [];
    const accepted = acceptanceText(row);
    if (reasons.length || accepted) {
      const list = cell.appendChild(el("ul", null, "reasons"));
      if (accepted) list.appendChild(el("li", accepted, "accepted"));
      for (const reason of reasons.slice(0, SHOWN_REASONS)) list.appendChild(el("li", reason));
      if (reasons.length > SHOWN_REASONS) {
        const more = list.appendChild(el("li", null, "more"));
        const link = more.appendChild(el("a", "+" + (reasons.length - SHOWN_REASONS) + " more on the run page"));
        link.href = runPageUrl(row.id);
      }
    }
    return cell;
  }

  function ranCell(row) {
    const cell = el("td", null, "ran");
    if (row.dag_id) {
      cell.appendChild(airflowLink(fmtDate(row.ran_at), dagRunUrl(row.dag_id, row.run_id),
        "Open DAG run " + row.dag_id + " / " + row.run_id + " in Airflow"));
    } else {
      cell.textContent = fmtDate(row.ran_at);
    }
    cell.appendChild(el("small", row.run_id));
    return cell;
  }

  // Backend, then each environment field the server lists; a field that changed since the previous run of this
  // model on this backend is highlighted and says what it was.
  function envCell(row, envFields) {
    const cell = el("td", null, "env opt");
    cell.appendChild(el("span", row.backend));
    const changed = row.env_changed || {};
    for (const [field, label] of Object.entries(envFields)) {
      const line = el("span", row[field] || "–");
      line.title = label;
      if (field in changed) {
        line.className = "changed";
        line.dataset.field = field;
        line.appendChild(el("small", label + " changed, was " + changed[field]));
      }
      cell.appendChild(line);
    }
    return cell;
  }

  // The model links to the run page: everything about this run × batch size.
  function modelCell(row) {
    const cell = el("td", null, "model");
    const link = cell.appendChild(el("a", row.model_variant));
    link.href = runPageUrl(row.id);
    link.title = "This run's page: verdict, fingerprint, latency, energy and accuracy evidence";
    if (row.precision_mode) cell.appendChild(el("small", row.precision_mode));
    return cell;
  }

  // Pick any two rows (across pages too) and compare them.
  function pickCell(row) {
    const cell = el("td", null, "pick");
    const box = cell.appendChild(el("input"));
    box.type = "checkbox";
    box.value = String(row.id);
    box.checked = state.picked.includes(row.id);
    box.setAttribute("aria-label", "Pick run " + row.run_id + " (batch size " + row.batch_size + ") to compare");
    box.addEventListener("change", () => {
      state.picked = state.picked.filter((id) => id !== row.id);
      if (box.checked) state.picked.push(row.id);
      state.picked = state.picked.slice(-2); // the two picked last
      for (const other of document.querySelectorAll("#runs-table td.pick input")) {
        other.checked = state.picked.includes(Number(other.value));
      }
      renderCompareLink();
    });
    return cell;
  }

  function renderCompareLink() {
    const link = document.getElementById("compare");
    const ready = state.picked.length === 2;
    link.textContent = "Compare the two picked runs (" + state.picked.length + "/2)";
    link.classList.toggle("disabled", !ready);
    if (ready) link.href = comparePageUrl(state.picked[0], state.picked[1]);
    else link.removeAttribute("href");
  }

  function renderTable(rows, envFields) {
    const body = document.querySelector("#runs-table tbody");
    const headers = [...document.querySelectorAll("#runs-table thead th")].map((th) => th.textContent);
    body.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.runId = row.run_id;
      tr.append(
        statusCell(row),
        ranCell(row),
        modelCell(row),
        el("td", row.batch_size, "num"),
        el("td", fmt(row.top1, 2), "num"),
        el("td", fmt(row.throughput, 1), "num"),
        el("td", fmt(row.top5, 2), "num opt"),
        el("td", fmt(row.latency_p99_ms, 2), "num opt"),
        el("td", row.image_count === null ? "–" : row.image_count, "num opt"),
        envCell(row, envFields),
        pickCell(row),
      );
      [...tr.children].forEach((cell, index) => {
        cell.dataset.label = headers[index]; // the phone layout shows it above the value
      });
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

  // --- charts ------------------------------------------------------------------------------------------------------

  function seriesLabel(group, withModel) {
    const label = "bs " + group.batch_size + " · " + group.backend + " · " + (group.device || "?") + " · " +
      (group.precision_mode || "?");
    return withModel ? group.model_variant + " · " + label : label;
  }

  // Where a run goes on the x-axis: its start time, or (the default) its place among the runs shown, so runs
  // minutes apart are as readable as runs days apart.
  function xPlacement(groups) {
    // Runs with a value on either chart, so both charts give a run the same slot (a failed run has none).
    const plotted = groups.flatMap((g) => g.points).filter((p) => Object.keys(CHARTS).some((m) => p[m] != null));
    const times = [...new Set(plotted.map((p) => p.ran_at))].sort();
    if (axisSelect.value === "time") {
      return { x: (iso) => Date.parse(iso), label: (v) => fmtDate(new Date(v).toISOString()), slots: null };
    }
    const slot = new Map(times.map((iso, index) => [iso, index]));
    // Runs seconds apart share a minute: only the first of them is labelled, so no label repeats.
    const shown = (v) => (times[v] ? fmtDate(times[v]).slice(5) : "");
    return { x: (iso) => slot.get(iso), label: (v) => (v > 0 && shown(v - 1) === shown(v) ? "" : shown(v)),
      slots: times.length };
  }

  function mark(ctx, metric, key, fallback) {
    const run = ctx.raw && ctx.raw.run;
    if (!run || !MARKS[run.status]) return fallback;
    // A regressed run is marked only on the chart of the metric whose rule fired.
    if (run.status === "regressed" && !(run.regressed_on || []).includes(metric)) return fallback;
    return MARKS[run.status][key];
  }

  function datasetsFor(groups, metric, place) {
    const spec = CHARTS[metric];
    const datasets = [];
    const withModel = new Set(groups.map((g) => g.model_variant)).size > 1;
    for (const group of groups) {
      const color = PALETTE[group.slot % PALETTE.length];
      const shape = SHAPES[group.slot % SHAPES.length];
      const points = group.points
        .filter((p) => p[metric] !== null && p[metric] !== undefined)
        .map((p) => ({ x: place.x(p.ran_at), y: p[metric], run: p }));
      if (!points.length) continue; // only failed runs without numbers: nothing to draw (the table lists them)
      const label = seriesLabel(group, withModel);
      datasets.push({
        label: label,
        data: points,
        borderColor: color,
        backgroundColor: color,
        borderWidth: 2,
        shape: shape,
        // Hollow markers of different shapes, so series that sit on the same values stay visible.
        pointStyle: (ctx) => mark(ctx, metric, "style", shape),
        pointRadius: (ctx) => mark(ctx, metric, "radius", 5),
        pointHoverRadius: 9,
        pointBorderWidth: 2,
        pointBackgroundColor: (ctx) => mark(ctx, metric, "fill", "transparent"),
        pointBorderColor: (ctx) => mark(ctx, metric, "border", color),
        tension: 0,
      });
      // The baseline each run was gated against, as a short dash at that run (visible for a single run too).
      const baseline = points
        .filter((p) => p.run[spec.baseline] !== null && p.run[spec.baseline] !== undefined)
        .map((p) => ({ x: p.x, y: p.run[spec.baseline], run: p.run }));
      if (baseline.length) {
        datasets.push({
          label: label + " baseline",
          data: baseline,
          borderColor: color,
          backgroundColor: color,
          borderDash: [6, 4],
          borderWidth: 1,
          pointStyle: "line",
          pointRadius: 10,
          pointBorderWidth: 2,
          pointHitRadius: 0,
          stepped: "middle",
          isBaseline: true,
        });
      }
    }
    return datasets;
  }

  const MINUTE = 60 * 1000;
  const HOUR = 60 * MINUTE;
  const DAY = 24 * HOUR;
  const TIME_STEPS = [MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY,
    2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 365 * DAY];

  // A linear x-axis: run slots (ticks under every run Chart.js has room for), or epoch milliseconds with ticks on
  // whole UTC minutes/hours/days; no date adapter needed.
  function xAxis(datasets, place, text, grid) {
    const common = { type: "linear", grid: { color: grid }, ticks: { callback: place.label, color: text, maxRotation: 0 } };
    if (place.slots !== null) { // a tick under each run (Chart.js skips labels that would overlap)
      const ticks = Array.from({ length: place.slots }, (_, index) => ({ value: index }));
      return { ...common, min: -0.5, max: place.slots - 0.5, afterBuildTicks: (axis) => {
        axis.ticks = ticks;
      } };
    }
    const xs = datasets.flatMap((d) => d.data.map((p) => p.x)).filter(Number.isFinite);
    const first = Math.min(...xs);
    const last = Math.max(...xs);
    const step = TIME_STEPS.find((s) => (last - first) / s <= 6) || TIME_STEPS[TIME_STEPS.length - 1];
    const ticks = [];
    for (let v = Math.ceil((first - step / 2) / step) * step; v <= last + step / 2; v += step) ticks.push({ value: v });
    return {
      ...common,
      min: first - step / 2,
      max: last + step / 2,
      afterBuildTicks: (axis) => {
        axis.ticks = ticks;
      },
      ticks: { ...common.ticks, callback: (v) => fmtDate(new Date(v).toISOString()).slice(step < DAY ? 5 : 0,
        step < DAY ? 16 : 10) },
    };
  }

  // Vertical dotted lines where the environment changed, labelled with the fields (listed in full below).
  const envLines = {
    id: "envLines",
    afterDatasetsDraw(chart, args, options) {
      const { ctx, chartArea, scales } = chart;
      ctx.save();
      ctx.strokeStyle = options.color;
      ctx.fillStyle = options.color;
      ctx.setLineDash([2, 3]);
      ctx.font = "11px system-ui, sans-serif";
      for (const line of options.lines || []) {
        const x = scales.x.getPixelForValue(line.x);
        if (!(x >= chartArea.left && x <= chartArea.right)) continue;
        ctx.beginPath();
        ctx.moveTo(x, chartArea.top);
        ctx.lineTo(x, chartArea.bottom);
        ctx.stroke();
        ctx.fillText(line.label, Math.min(x + 3, chartArea.right - ctx.measureText(line.label).width), chartArea.top + 11);
      }
      ctx.restore();
    },
  };

  function envLinesFor(changes, groups, place, envFields) {
    const charted = new Set(groups.map((g) => g.model_variant + "\u0000" + g.backend));
    return changes
      .filter((c) => charted.has(c.model_variant + "\u0000" + c.backend))
      .map((c) => ({
        // between slots, the line sits just before the first run in the new environment
        x: place.slots === null ? place.x(c.ran_at) : place.x(c.ran_at) - 0.5,
        label: Object.keys(c.fields).map((f) => envFields[f] || f).join(", "),
      }));
  }

  function renderChanges(changes, envFields) {
    const list = document.getElementById("env-changes");
    list.replaceChildren();
    for (const change of changes) {
      const what = Object.entries(change.fields)
        .map(([field, [before, after]]) => (envFields[field] || field) + " " + before + " → " + after).join("; ");
      list.appendChild(el("li", fmtDate(change.ran_at) + " · " + change.backend + ": " + what +
        " (run " + change.run_id + ")"));
    }
  }

  // Reason lines are long: wrapped to the chart's width (about 7 px a character, less the tooltip's padding), the
  // tooltip stays narrow enough for Chart.js to keep it inside the chart, on a phone too.
  function tooltipChars(chart) {
    return Math.max(20, Math.min(60, Math.floor((chart.width - 40) / 7)));
  }

  function wrapped(text, width) {
    const lines = [];
    let line = "";
    for (const word of String(text).split(" ")) {
      if (line && line.length + 1 + word.length > width) {
        lines.push(line);
        line = word;
      } else {
        line = line ? line + " " + word : word;
      }
    }
    if (line) lines.push(line);
    return lines;
  }

  function drawChart(metric, body) {
    const spec = CHARTS[metric];
    if (charts[metric]) charts[metric].destroy();
    delete charts[metric];
    const canvas = document.getElementById(spec.canvas);
    const place = xPlacement(body.series);
    const datasets = datasetsFor(body.series, metric, place);
    const figure = canvas.closest("figure");
    figure.querySelector(".chart-box").hidden = !datasets.length;
    figure.querySelector(".chart-empty").hidden = datasets.length > 0;
    if (!datasets.length) return;
    if (typeof window.Chart !== "function") {
      showError(new Error("The chart library did not load (static/vendor/chart.js); the table below is complete."));
      return;
    }
    const text = cssVar("--fg");
    const grid = cssVar("--grid");
    charts[metric] = new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      plugins: [envLines],
      options: {
        animation: false,
        maintainAspectRatio: false,
        color: text,
        interaction: { mode: "point", intersect: true }, // every series under the pointer, not just one
        scales: {
          x: xAxis(datasets, place, text, grid),
          y: { title: { display: true, text: spec.unit, color: text }, grid: { color: grid }, ticks: { color: text } },
        },
        plugins: {
          envLines: { lines: envLinesFor(body.changes, body.series, place, body.env_fields), color: cssVar("--muted") },
          legend: {
            labels: {
              color: text,
              usePointStyle: true,
              boxWidth: 8,
              boxHeight: 8,
              generateLabels: (chart) => window.Chart.defaults.plugins.legend.labels.generateLabels(chart)
                .filter((item) => !chart.data.datasets[item.datasetIndex].isBaseline)
                .map((item) => ({ ...item, pointStyle: chart.data.datasets[item.datasetIndex].shape,
                  fillStyle: "transparent" })),
            },
          },
          tooltip: {
            filter: (item) => !item.dataset.isBaseline,
            callbacks: {
              title: (items) => (items.length ? "ran " + fmtDate(items[0].raw.run.ran_at) : ""),
              label: (item) => wrapped(item.dataset.label + ": " + fmt(item.parsed.y, spec.digits) + " " +
                spec.unit, tooltipChars(item.chart)),
              afterLabel: (item) => {
                const run = item.raw.run;
                const lines = ["run: " + run.run_id, "status: " + run.status];
                if (run[spec.baseline] !== null && run[spec.baseline] !== undefined) {
                  lines.push("baseline: " + fmt(run[spec.baseline], spec.digits) + " " + spec.unit);
                }
                lines.push(...(run.deciding || []));
                lines.push("click for this run's page");
                return lines.flatMap((line) => wrapped(line, tooltipChars(item.chart)));
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
          if (run) window.location.assign(runPageUrl(run.id));
        },
      },
    });
  }

  // The unfiltered history can hold years of runs: the server charts the latest ones and says how many there are.
  function renderCap(series) {
    const note = document.getElementById("chart-cap");
    note.hidden = !series.capped;
    note.textContent = series.capped
      ? "The charts show the latest " + series.points.toLocaleString("en") + " of " +
        series.total.toLocaleString("en") + " matching runs (since " + fmtDate(series.since) + " UTC); narrow the " +
        "filters or the dates to chart older runs. The table and the CSV have them all."
      : "";
  }

  function drawCharts() {
    if (!state.series) return;
    renderCap(state.series);
    for (const metric of Object.keys(CHARTS)) drawChart(metric, state.series);
    renderChanges(state.series.changes, state.series.env_fields);
  }

  // --- loading -----------------------------------------------------------------------------------------------------

  async function refresh() {
    const params = filterParams();
    saveView();
    document.getElementById("csv").href = "api/runs.csv" + (params.toString() ? "?" + params.toString() : "");
    const pageParams = pagingParams(params);
    const request = ++state.request;
    show("loading", true);
    try {
      const [table, series] = await Promise.all([
        getJson("api/runs", pageParams, labelFor), getJson("api/series", params, labelFor),
      ]);
      if (request !== state.request) return; // a newer refresh (the user changed a filter again) wins
      clearError();
      const empty = table.total === 0;
      show("empty", empty && !hasFilters());
      show("no-match", empty && hasFilters());
      show("runs", !empty);
      show("charts", !empty);
      document.getElementById("csv").textContent = "Download CSV (all " + table.total + " matching runs)";
      renderTable(table.rows, table.env_fields);
      renderPager(table.total, table.rows.length);
      state.series = empty ? null : series;
      drawCharts();
      document.body.dataset.state = empty ? (hasFilters() ? "no-match" : "empty") : "loaded";
    } catch (err) {
      if (request !== state.request) return;
      for (const id of ["empty", "no-match", "runs", "charts"]) show(id, false);
      showError(err);
      document.body.dataset.state = "error";
    } finally {
      if (request === state.request) show("loading", false);
    }
  }

  async function start() {
    try {
      fillMenus(await getJson("api/filters", null, labelFor));
    } catch (err) {
      showError(err);
      document.body.dataset.state = "error";
      show("loading", false);
      return;
    }
    loadView();
    await refresh();
  }

  form.addEventListener("change", () => {
    state.offset = 0;
    state.unheld = {}; // the user took over from the URL
    refresh();
  });
  form.addEventListener("reset", () => {
    state.offset = 0;
    state.unheld = {};
    window.setTimeout(refresh, 0); // after the browser has cleared the fields
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  axisSelect.addEventListener("change", () => {
    saveView();
    drawCharts();
  });
  document.getElementById("prev").addEventListener("click", () => {
    state.unheld = {};
    state.offset = Math.max(0, state.offset - state.limit);
    refresh();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.unheld = {};
    state.offset += state.limit;
    refresh();
  });
  document.getElementById("page-size").addEventListener("change", (event) => {
    state.unheld = {};
    state.limit = Number(event.target.value);
    state.offset = 0;
    refresh();
  });
  window.metricsTheme.onChange(drawCharts);

  renderCompareLink();
  start();
})();

// The run page: everything about one metrics row (run × batch size × backend × precision), from api/runs/<id>.
// Helpers in common.js; every value from the server goes into the page as text, never as HTML.
(function () {
  "use strict";

  const {
    el, show, fmt, fmtSigned, fmtP, fmtDate, cssVar, statusBadge, acceptanceText, runPageUrl, comparePageUrl,
    dagRunUrl, taskUrl, airflowLink, getJson, postJson, showError, clearError,
  } = window.metricsCommon;

  const charts = {};
  const state = { id: null, detail: null };

  // The figures listed under "Figures": row field, label, format (decimals, or "pct" for a fraction shown in
  // percent, "sha", "p", "stages", null for text), unit, and what a missing value says.
  const NOT_MEASURED = "not measured";
  const FIGURES = [
    ["top1", "Top-1", 3, "%"], ["top5", "Top-5", 3, "%"], ["baseline_top1", "Top-1 baseline", 3, "%"],
    ["throughput", "Throughput (ais_bench: mean per loop)", 1, "img/s"],
    ["throughput_robust", "Throughput (robust: median per loop)", 1, "img/s", NOT_MEASURED],
    ["e2e_throughput", "End-to-end throughput (preprocess + infer + evaluate)", 1, "img/s", NOT_MEASURED],
    ["stage_seconds", "Stage times", "stages", "", NOT_MEASURED],
    ["baseline_throughput", "Throughput baseline", 1, "img/s"],
    ["throughput_check", "Throughput rule", null, ""], ["throughput_p_value", "Throughput p", "p", ""],
    ["latency_mean_ms", "Latency mean", 3, "ms"], ["latency_p50_ms", "Latency p50", 3, "ms"],
    ["latency_p99_ms", "Latency p99", 3, "ms"], ["latency_cv", "Per-loop CV (standard deviation / mean)", "pct", ""],
    ["latency_robust_cv", "Per-loop CV (robust: 1.4826 × MAD / median)", "pct", "", NOT_MEASURED],
    ["latency_iqr_ms", "Per-loop IQR", 3, "ms"], ["sample_count", "Loops kept", 0, ""],
    ["warmup_count", "Warm-up loops", 0, ""], ["measurements", "Measurements", 0, ""],
    ["image_count", "Images", 0, ""], ["input_dtype", "Input dtype", null, ""],
    ["toolkit_version", "Toolkit", null, ""], ["trigger", "Trigger", null, ""],
    ["checkpoint_path", "Checkpoint", null, ""],
    ["checkpoint_sha256", "Checkpoint sha256", "sha", ""], ["artifact_sha256", "Artifact sha256", "sha", ""],
  ];
  // How each reason line took part in the verdict, in words beside its colour.
  const OUTCOME_WORDS = { fired: "fired", held: "held", note: "note" };
  const LOG_SPAN = 8;

  function value(row, field, digits, unit, missing) {
    const raw = row[field];
    if (raw === null || raw === undefined || raw === "") return missing || "–";
    if (digits === "sha") return String(raw).slice(0, 12) + "…";
    if (digits === "p") return fmtP(raw);
    if (digits === "pct") return fmt(100 * raw, 1) + " %";
    if (digits === "stages") {
      return Object.entries(raw).map(([stage, seconds]) => stage + " " + fmt(seconds, 2) + " s").join(" · ");
    }
    if (digits === null) return String(raw);
    return fmt(raw, digits) + (unit ? " " + unit : "");
  }

  function kvRows(tbody, entries, highlighted) {
    tbody.replaceChildren();
    for (const [key, shown] of entries) {
      const tr = tbody.appendChild(el("tr"));
      tr.append(el("th", key), el("td", shown));
      if (highlighted && highlighted.has(key)) tr.className = "changed";
    }
  }

  // --- sections ----------------------------------------------------------------------------------------------------

  function renderHeader(detail) {
    const row = detail.row;
    const what = [row.model_variant, "batch size " + row.batch_size, row.backend, row.device || "unknown device",
      row.precision_mode].join(" · ");
    document.getElementById("title").textContent = what;
    document.getElementById("subtitle").textContent = "Run " + row.run_id + " · ran " + fmtDate(row.ran_at) +
      " UTC · row " + row.id;
    document.title = "ConvMixer run " + row.run_id + " (batch size " + row.batch_size + ")";
  }

  function renderVerdict(detail) {
    const status = document.getElementById("status");
    status.replaceChildren(statusBadge(detail.row.status));
    const list = document.getElementById("reasons");
    list.replaceChildren();
    for (const reason of detail.reasons) {
      const item = list.appendChild(el("li", null, "rule rule-" + reason.outcome));
      item.append(el("span", OUTCOME_WORDS[reason.outcome] || reason.outcome, "rule-outcome"), reason.text);
      item.dataset.outcome = reason.outcome;
    }
    if (!detail.reasons.length) list.appendChild(el("li", "The gate wrote no reasons for this row.", "rule"));
  }

  function renderAccept(detail) {
    const accept = detail.accept;
    const box = document.getElementById("accept");
    const accepted = document.getElementById("accepted");
    const form = document.getElementById("accept-form");
    const button = document.getElementById("accept-button");
    const why = document.getElementById("accept-why");
    const text = acceptanceText(detail.row);
    box.hidden = !(accept.offered || text);
    accepted.hidden = !text;
    // An accepted top-1 or fidelity regression keeps its red badge (metrics.rebaseline): say why beside it.
    const stays = detail.row.status === "regressed" && accept.kept.length
      ? " It stays regressed on " + accept.kept.join(", ") + ": accepting moved the throughput baseline, not " +
        "what those rules compare with." : "";
    accepted.textContent = text ? "This run was " + text + "." + stays : "";
    form.hidden = !accept.offered || Boolean(text);
    const refusal = accept.why_not || (accept.allowed ? null : accept.why_not_allowed);
    button.disabled = Boolean(refusal);
    form.elements.namedItem("reason").disabled = Boolean(refusal);
    why.textContent = refusal ? "You cannot accept this run: " + refusal + "." : accept.effect;
    button.title = refusal || "";
  }

  async function submitAccept(event) {
    event.preventDefault();
    const form = event.target;
    const reason = form.elements.namedItem("reason").value.trim();
    clearError("accept-error");
    if (reason.length < 3) {
      showError(new Error("Say why this run is the new normal (at least a few words)."), "accept-error");
      return;
    }
    const button = document.getElementById("accept-button");
    button.disabled = true;
    const path = "api/runs/" + state.id + "/accept";
    try {
      try {
        await postJson(path, { reason: reason }, state.detail.accept.csrf_token);
      } catch (err) {
        if (err.status !== 403 || !/X-CSRF-Token/.test(err.message)) throw err;
        const fresh = await getJson("api/runs/" + state.id); // the token expired: fetch a new one, try once more
        await postJson(path, { reason: reason }, fresh.accept.csrf_token);
      }
      await load();
    } catch (err) {
      showError(err, "accept-error");
      button.disabled = false;
    }
  }

  function renderLinks(detail) {
    const row = detail.row;
    const airflow = document.getElementById("airflow-links");
    airflow.replaceChildren();
    if (row.dag_id) {
      airflow.appendChild(el("li")).appendChild(airflowLink("DAG run " + row.run_id, dagRunUrl(row.dag_id, row.run_id)));
      for (const [task, label] of Object.entries(detail.airflow_tasks)) {
        const mapped = detail.mapped_tasks.includes(task);
        airflow.appendChild(el("li")).appendChild(airflowLink("Task log: " + label,
          taskUrl(row.dag_id, row.run_id, task, mapped)));
      }
    } else {
      airflow.appendChild(el("li", "Recorded outside Airflow (trigger " + (row.trigger || "unknown") +
        "): no DAG run to link to."));
    }
    const runs = document.getElementById("run-links");
    runs.replaceChildren();
    const neighbours = [["previous", "Previous run of this series"], ["next", "Next run of this series"],
      ["baseline", "Last ok run before it (baseline)"]];
    for (const [key, label] of neighbours) {
      const other = detail[key];
      const item = runs.appendChild(el("li"));
      if (!other) {
        item.textContent = label + ": none";
        continue;
      }
      item.append(label + ": ");
      const link = item.appendChild(el("a", other.run_id + " (" + other.status + ", " + fmtDate(other.ran_at) + ")"));
      link.href = runPageUrl(other.id);
      link.dataset.rel = key;
      if (key !== "next") {
        item.append(" · ");
        const compare = item.appendChild(el("a", "compare"));
        compare.href = comparePageUrl(other.id, row.id);
        compare.dataset.rel = "compare-" + key;
      }
    }
  }

  function renderFigures(detail) {
    const list = document.getElementById("figures");
    list.replaceChildren();
    for (const [field, label, digits, unit, missing] of FIGURES) {
      const shown = el("dd", value(detail.row, field, digits, unit, missing));
      shown.dataset.field = field;
      list.append(el("dt", label), shown);
    }
  }

  function renderFingerprint(detail) {
    const print = detail.fingerprint;
    const diff = document.getElementById("fingerprint-diff");
    diff.replaceChildren();
    const changed = new Set(print.vs_previous.map((line) => line.split(":")[0]));
    const sets = [["previous run", detail.previous, print.vs_previous], ["baseline", detail.baseline, print.vs_baseline]];
    for (const [label, other, lines] of sets) {
      if (!other) continue;
      const text = lines.length ? "Differs from the " + label + " (" + other.run_id + "): " + lines.join("; ")
        : "Same as the " + label + " (" + other.run_id + ").";
      diff.appendChild(el("li", text, lines.length ? "changed" : ""));
    }
    if (!detail.previous) diff.appendChild(el("li", "The first run of its series: nothing to compare with."));
    const entries = Object.entries(print.values).map(([key, shown]) => [
      key + (print.not_keyed.includes(key) ? " (not keyed)" : ""), shown === null ? "–" : String(shown)]);
    if (!entries.length) entries.push(["fingerprint", "none recorded (a row from before fingerprints were kept)"]);
    kvRows(document.querySelector("#fingerprint-table tbody"), entries, changed);
  }

  function renderEnergy(detail) {
    const energy = detail.energy;
    const summary = document.getElementById("energy-summary");
    summary.textContent = energy.measured
      ? fmt(energy.j_per_image, 4) + " J per image · " + fmt(energy.throughput_per_watt, 2) + " images/s per watt"
      : "Not measured: " + energy.why + ".";
    summary.className = energy.measured ? "" : "hint";
    // Only what was read: a field the reader left empty (no source, no samples) is not a value to show.
    const entries = Object.entries(energy.details).filter(([, shown]) => shown !== null && typeof shown !== "object")
      .map(([key, shown]) => [key, String(shown)]);
    kvRows(document.querySelector("#energy-table tbody"), entries);
  }

  // --- accuracy evidence -------------------------------------------------------------------------------------------

  function flipsBlock(title, flips, pColumn) {
    const block = el("div", null, "flip-block");
    block.appendChild(el("h3", title));
    if (!flips) {
      block.appendChild(el("p", "Not paired: the gate found no run with predictions on the same images.", "hint"));
      return block;
    }
    block.dataset.runId = flips.run_id;
    const link = block.appendChild(el("p", "Against run " + flips.run_id + " (batch size " + flips.batch_size + "): " +
      flips.right_to_wrong + " right→wrong, " + flips.wrong_to_right + " wrong→right, top-1 " +
      fmtSigned(flips.top1_delta, 3) + " pt, McNemar exact p = " + fmtP(flips.p_value) + "."));
    link.className = "flip-summary";
    if (pColumn !== null && pColumn !== undefined) block.dataset.p = String(pColumn);
    const table = block.appendChild(el("table", null, "contingency"));
    const [[bothRight, toWrong], [toRight, bothWrong]] = flips.table;
    const head = table.appendChild(el("tr"));
    head.append(el("th", ""), el("th", "right now"), el("th", "wrong now"));
    const first = table.appendChild(el("tr"));
    first.append(el("th", "right before"), el("td", bothRight, "num"), el("td", toWrong, "num bad"));
    const second = table.appendChild(el("tr"));
    second.append(el("th", "wrong before"), el("td", toRight, "num good"), el("td", bothWrong, "num"));
    for (const [label, names] of [["First right→wrong images", flips.right_to_wrong_names],
      ["First wrong→right images", flips.wrong_to_right_names]]) {
      if (!names || !names.length) continue;
      block.appendChild(el("p", label + ":", "names-label"));
      const list = block.appendChild(el("ul", null, "names"));
      for (const name of names) list.appendChild(el("li", name));
    }
    return block;
  }

  function renderAccuracy(detail) {
    const ev = detail.evidence;
    const fidelity = document.getElementById("fidelity");
    fidelity.replaceChildren(el("h3", "Fidelity against the ONNX (fp32)"));
    if (ev.fidelity) {
      const f = ev.fidelity;
      const breaches = f.breaches || [];
      fidelity.appendChild(el("p", breaches.length ? breaches.join("; ") : "Within every threshold.",
        breaches.length ? "verdict-bad" : "verdict-good"));
      const table = fidelity.appendChild(el("table", null, "kv"));
      const body = table.appendChild(el("tbody"));
      const thresholds = f.thresholds || {};
      kvRows(body, [
        ["images", String(f.images)],
        ["top-1 agreement", fmt(100 * f.top1_agreement, 2) + " %"],
        ["min cosine", fmt(f.min_cosine, 5) + " (threshold ≥ " + thresholds.min_cosine + ")"],
        ["mean cosine", fmt(f.mean_cosine, 5)],
        ["max KL divergence", fmtP(f.max_kl) + " (threshold ≤ " + thresholds.max_kl + ")"],
        ["max relative Euclidean", fmt(f.max_rel_euclidean, 4) + " (threshold ≤ " + thresholds.max_rel_euclidean + ")"],
        ["max |difference|", fmt(f.max_abs_diff, 4)],
      ]);
    } else {
      fidelity.appendChild(el("p", "Not measured for this row (fidelity is checked for compiled artifacts against " +
        "their ONNX).", "hint"));
    }
    const flips = document.getElementById("flips");
    flips.replaceChildren(
      flipsBlock("Flips against the previous ok run", ev.flips_previous, ev.flips_p_value),
      flipsBlock("Flips against the reference (ONNX fp32 on ONNX Runtime)", ev.flips_reference, ev.reference_p_value),
    );
    const classes = document.getElementById("classes");
    classes.replaceChildren();
    const deltas = ev.flips_previous && ev.flips_previous.class_deltas ? ev.flips_previous.class_deltas : [];
    if (deltas.length) {
      classes.appendChild(el("h3", "Per-class top-1 change against the previous ok run (largest drop first)"));
      const body = classes.appendChild(el("table", null, "kv deltas")).appendChild(el("tbody"));
      kvRows(body, deltas.map((d) => ["class " + d.class, fmtSigned(d.delta_pt, 1) + " pt"]));
    }
    if (ev.worst_classes.length) {
      classes.appendChild(el("h3", "Worst classes in this run"));
      const body = classes.appendChild(el("table", null, "kv")).appendChild(el("tbody"));
      kvRows(body, ev.worst_classes.map((c) => ["class " + c.class, fmt(c.top1, 1) + " % of " + c.images + " images"]));
    }
  }

  // --- latency charts ----------------------------------------------------------------------------------------------

  function runLabel(run) {
    return fmtDate(run.ran_at).slice(5) + (run.this ? " (this)" : "");
  }

  function drawLatency(detail) {
    for (const key of Object.keys(charts)) {
      charts[key].destroy();
      delete charts[key];
    }
    if (typeof window.Chart !== "function") {
      showError(new Error("The chart library did not load (static/vendor/chart.js); the figures above are complete."));
      return;
    }
    const text = cssVar("--fg");
    const grid = cssVar("--grid");
    const accent = cssVar("--accent");
    const muted = cssVar("--muted");
    const bad = cssVar("--error-line");
    const runs = detail.latency.runs;
    const boxes = runs.map((run) => run.box || null);
    const colour = (run) => (run.this ? accent : muted);
    const scales = {
      x: { grid: { color: grid }, ticks: { color: text, maxRotation: 0 } },
      y: { grid: { color: grid }, ticks: { color: text }, title: { display: true, text: "ms per loop", color: text } },
    };
    // One run's spikes (p99 at 40 ms beside loops of 0.5 ms) would flatten every box on a linear axis: a log axis
    // once the values span more than a factor of LOG_SPAN.
    const values = boxes.filter(Boolean).flatMap((b) => [b.p5, b.p99]).filter((v) => v > 0);
    const logScale = values.length > 0 && Math.max(...values) / Math.min(...values) > LOG_SPAN;
    const yAxis = { ...scales.y, beginAtZero: false, type: logScale ? "logarithmic" : "linear" };
    if (logScale) yAxis.title = { ...scales.y.title, text: "ms per loop (log scale)" };
    charts.boxes = new window.Chart(document.getElementById("chart-boxes"), {
      data: {
        labels: runs.map(runLabel),
        datasets: [
          // Drawn under the box (a higher order is drawn first), so only the whiskers outside it show.
          { type: "bar", label: "p5–p95", data: boxes.map((b) => (b ? [b.p5, b.p95] : null)), barPercentage: 0.03,
            backgroundColor: runs.map(colour), grouped: false, order: 3 },
          { type: "bar", label: "q1–q3", data: boxes.map((b) => (b ? [b.q1, b.q3] : null)), barPercentage: 0.6,
            backgroundColor: runs.map((run) => colour(run) + "99"), borderColor: runs.map(colour), borderWidth: 1,
            grouped: false, order: 2 },
          { type: "line", label: "median", data: boxes.map((b) => (b ? b.median : null)), showLine: false,
            pointStyle: "line", pointRadius: 24, pointBorderWidth: 3, borderColor: text, backgroundColor: text,
            order: 1 },
          { type: "line", label: "p99", data: boxes.map((b) => (b ? b.p99 : null)), showLine: false,
            pointStyle: "crossRot", pointRadius: 6, borderColor: bad, backgroundColor: bad, order: 0 },
        ],
      },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: scales.x, y: yAxis }, // the spread matters, not the distance to 0
        plugins: {
          legend: { labels: { color: text } },
          tooltip: {
            callbacks: {
              title: (items) => (items.length ? runs[items[0].dataIndex].run_id : ""),
              afterTitle: (items) => {
                const run = items.length ? runs[items[0].dataIndex] : null;
                if (!run) return "";
                return run.box ? run.status + ", " + run.box.count + " loops" : run.status + ": " + run.why;
              },
            },
          },
        },
      },
    });
    const histogram = detail.latency.histogram;
    document.getElementById("chart-histogram").closest(".chart-box").hidden = !histogram;
    const none = document.getElementById("histogram-none");
    none.hidden = Boolean(histogram);
    none.textContent = detail.latency.why || "";
    if (!histogram) return;
    const edges = histogram.edges;
    charts.histogram = new window.Chart(document.getElementById("chart-histogram"), {
      type: "bar",
      data: {
        labels: histogram.counts.map((_, i) => fmt((edges[i] + edges[i + 1]) / 2, 2)),
        datasets: [{ label: "loops", data: histogram.counts, backgroundColor: accent, barPercentage: 1,
          categoryPercentage: 1 }],
      },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: { ...scales.x, title: { display: true, text: "ms per loop", color: text } },
          y: { ...scales.y, title: { display: true, text: "loops", color: text } } },
        plugins: { legend: { display: false } },
      },
    });
  }

  // --- loading -----------------------------------------------------------------------------------------------------

  function render(detail) {
    renderHeader(detail);
    renderVerdict(detail);
    renderAccept(detail);
    renderLinks(detail);
    renderFigures(detail);
    renderFingerprint(detail);
    renderEnergy(detail);
    renderAccuracy(detail);
    drawLatency(detail);
  }

  async function load() {
    const raw = new URLSearchParams(window.location.search).get("id") || "";
    show("loading", true);
    try {
      if (!/^[1-9]\d{0,9}$/.test(raw)) {
        throw new Error("This page needs a row id (run?id=<number>); open a run from the history table.");
      }
      state.id = Number(raw);
      state.detail = await getJson("api/runs/" + state.id);
      clearError();
      render(state.detail);
      show("run", true);
      document.body.dataset.state = "loaded";
    } catch (err) {
      show("run", false);
      showError(err);
      document.body.dataset.state = "error";
    } finally {
      show("loading", false);
    }
  }

  document.getElementById("accept-form").addEventListener("submit", submitAccept);
  window.metricsTheme.onChange(() => {
    if (state.detail) drawLatency(state.detail);
  });
  load();
})();

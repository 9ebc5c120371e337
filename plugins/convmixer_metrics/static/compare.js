// Compare two metrics rows side by side (api/compare?a=&b=): fingerprint differences, figure deltas with their
// significance, and the images whose top-1 flipped. Helpers in common.js; server values go in as text only.
(function () {
  "use strict";

  const {
    el, show, fmt, fmtSigned, fmtP, fmtDate, statusBadge, runPageUrl, mirrorUrl, getJson, showError, clearError,
  } = window.metricsCommon;

  const form = document.getElementById("pick");
  const ROW_ID = /^[1-9]\d{0,9}$/;
  const DIGITS = { "%": 3, "img/s": 1, ms: 3, "": 3, "J/image": 4, "img/s/W": 2 };
  const NOT_MEASURED = "not measured";
  // A spread in percent reads as the run page gives it (234.8 %), not to a top-1's three decimals.
  const FIELD_DIGITS = { latency_cv: 1, latency_robust_cv: 1 };

  function sideRow(label, side) {
    const tr = el("tr");
    tr.appendChild(el("th", label));
    const cell = tr.appendChild(el("td"));
    const link = cell.appendChild(el("a", side.run_id));
    link.href = runPageUrl(side.id);
    cell.append(" ", statusBadge(side.status));
    cell.appendChild(el("small", [side.model_variant, "batch size " + side.batch_size, side.backend,
      side.device || "unknown device", side.precision_mode, "ran " + fmtDate(side.ran_at) + " UTC", "row " + side.id]
      .join(" · ")));
    return tr;
  }

  function renderFlips(flips) {
    const box = document.getElementById("flips");
    box.replaceChildren();
    if (flips.why) {
      box.appendChild(el("p", "Not compared: " + flips.why + ".", "hint"));
      return;
    }
    box.appendChild(el("p", flips.right_to_wrong + " right→wrong and " + flips.wrong_to_right + " wrong→right of " +
      flips.images + " images; top-1 " + fmt(flips.top1_a, 3) + " → " + fmt(flips.top1_b, 3) + " % (" +
      fmtSigned(flips.top1_delta_pt, 3) + " pt); McNemar exact p = " + fmtP(flips.mcnemar_exact_p) +
      (flips.mcnemar_exact_p < 0.05 ? ": a real change, not noise." : ": within what chance explains."),
    "flip-summary"));
    const table = box.appendChild(el("table", null, "contingency"));
    const [[bothRight, toWrong], [toRight, bothWrong]] = flips.table;
    const head = table.appendChild(el("tr"));
    head.append(el("th", ""), el("th", "right in B"), el("th", "wrong in B"));
    const first = table.appendChild(el("tr"));
    first.append(el("th", "right in A"), el("td", bothRight, "num"), el("td", toWrong, "num bad"));
    const second = table.appendChild(el("tr"));
    second.append(el("th", "wrong in A"), el("td", toRight, "num good"), el("td", bothWrong, "num"));
    for (const [label, names] of [["First right→wrong images", flips.right_to_wrong_names],
      ["First wrong→right images", flips.wrong_to_right_names]]) {
      if (!names.length) continue;
      box.appendChild(el("p", label + ":", "names-label"));
      const list = box.appendChild(el("ul", null, "names"));
      for (const name of names) list.appendChild(el("li", name));
    }
    if (flips.class_deltas.length) {
      box.appendChild(el("p", "Per-class top-1 change (largest drop first):", "names-label"));
      const list = box.appendChild(el("ul", null, "names"));
      for (const d of flips.class_deltas) list.appendChild(el("li", "class " + d.class + ": " + fmtSigned(d.delta_pt, 1) + " pt"));
    }
  }

  function renderThroughput(test) {
    const line = document.getElementById("throughput-test");
    if (test.why) {
      line.textContent = "Not tested: " + test.why + ".";
      line.className = "hint";
      return;
    }
    line.className = "";
    line.textContent = "95 % bootstrap intervals of the figure: A " + fmt(test.interval_a[0], 1) + "–" +
      fmt(test.interval_a[1], 1) + ", B " + fmt(test.interval_b[0], 1) + "–" + fmt(test.interval_b[1], 1) +
      " img/s (" + (test.intervals_overlap ? "they overlap" : "they do not overlap") + "); Welch's t-test on the " +
      test.samples[0] + " and " + test.samples[1] + " per-loop times: p = " + fmtP(test.welch_p) + ".";
  }

  function render(view) {
    const sides = document.querySelector("#sides tbody");
    sides.replaceChildren(sideRow("A", view.a), sideRow("B", view.b));
    document.getElementById("series-note").textContent = view.same_series
      ? "Both rows belong to one series (model, backend, device, precision and batch size)."
      : "The rows belong to different series: differences may come from the setup, not from a regression.";
    const diff = document.getElementById("fingerprint-diff");
    diff.replaceChildren();
    for (const line of view.fingerprint.differences) diff.appendChild(el("li", line, "changed"));
    if (!view.fingerprint.differences.length) diff.appendChild(el("li", "The same fingerprint."));
    const body = document.querySelector("#deltas tbody");
    body.replaceChildren();
    for (const metric of view.metrics) {
      const digits = FIELD_DIGITS[metric.field] !== undefined ? FIELD_DIGITS[metric.field]
        : DIGITS[metric.unit] === undefined ? 3 : DIGITS[metric.unit];
      const tr = body.appendChild(el("tr"));
      tr.dataset.field = metric.field;
      const change = metric.delta === undefined ? "–" : fmtSigned(metric.delta_pct, 1) + " %";
      // A figure the run did not record (older rows, a tool that gives no per-loop list) says so.
      const side = (v) => (v === null || v === undefined ? NOT_MEASURED : fmt(v, digits));
      tr.append(el("th", metric.label + (metric.unit ? " (" + metric.unit + ")" : "")), el("td", side(metric.a), "num"),
        el("td", side(metric.b), "num"),
        el("td", metric.delta === undefined ? "–" : fmtSigned(metric.delta, digits), "num"), el("td", change, "num"));
      if (metric.delta !== undefined && metric.delta !== 0) tr.className = metric.better ? "better" : "worse";
    }
    renderThroughput(view.throughput);
    renderFlips(view.flips);
  }

  async function load() {
    const params = new URLSearchParams(window.location.search);
    const a = params.get("a") || "";
    const b = params.get("b") || "";
    form.elements.namedItem("a").value = a;
    form.elements.namedItem("b").value = b;
    if (!a && !b) {
      document.body.dataset.state = "pick";
      return;
    }
    show("loading", true);
    try {
      if (!ROW_ID.test(a) || !ROW_ID.test(b)) throw new Error("Rows A and B must be row ids (whole numbers from 1).");
      const view = await getJson("api/compare", new URLSearchParams({ a: a, b: b }));
      clearError();
      render(view);
      show("comparison", true);
      document.body.dataset.state = "loaded";
    } catch (err) {
      show("comparison", false);
      showError(err);
      document.body.dataset.state = "error";
    } finally {
      show("loading", false);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ a: form.elements.namedItem("a").value, b: form.elements.namedItem("b").value });
    mirrorUrl("?" + query.toString());
    load();
  });
  document.getElementById("swap").addEventListener("click", () => {
    const a = form.elements.namedItem("a");
    const b = form.elements.namedItem("b");
    [a.value, b.value] = [b.value, a.value];
    form.requestSubmit();
  });
  load();
})();

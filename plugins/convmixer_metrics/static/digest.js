// The digest section of the history page: per model × chip × batch size × precision over the last days (what the
// digest DAG sends), from api/digest. Its own file so the history page's script stays as it is.
(function () {
  "use strict";

  const { el, fmtSigned, fmtDate, statusBadge, runPageUrl, getJson, showError } = window.metricsCommon;

  function change(latest, first, digits, percent) {
    if (latest === null || latest === undefined || first === null || first === undefined || !first) return "–";
    const delta = percent ? (latest / first - 1) * 100 : latest - first;
    return fmtSigned(delta, digits) + (percent ? " %" : " pt");
  }

  function row(line) {
    const tr = el("tr");
    const name = el("td");
    const link = name.appendChild(el("a", line.model));
    link.href = runPageUrl(line.latest_row_id);
    name.appendChild(el("span", " · " + (line.chip || "unknown chip") + " · " + (line.precision || "default"), "hint"));
    const verdict = el("td");
    verdict.append(statusBadge(line.latest_status), el("div", line.latest_reason, "hint"));
    const accepted = el("td");
    for (const one of line.accepted) {
      accepted.appendChild(el("div", "row " + one.row_id + " by " + (one.by || "?") + ", " + fmtDate(one.at) +
        " UTC: " + (one.reason || "")));
    }
    if (!line.accepted.length) accepted.textContent = "–";
    tr.append(
      name, el("td", line.batch_size, "num"), el("td", line.runs, "num"), verdict,
      el("td", change(line.latest_throughput, line.first_throughput, 1, true), "num"),
      el("td", change(line.latest_top1, line.first_top1, 2, false), "num"),
      el("td", line.regressions + (line.open_regression ? " (open)" : ""), "num"), accepted,
    );
    return tr;
  }

  async function load() {
    const section = document.getElementById("digest");
    try {
      const digest = await getJson("api/digest");
      document.getElementById("digest-period").textContent =
        "The last " + digest.days + " days (" + fmtDate(digest.since) + " – " + fmtDate(digest.until) + " UTC).";
      document.querySelector("#digest-table tbody").replaceChildren(...digest.lines.map(row));
      document.getElementById("digest-empty").hidden = digest.lines.length > 0;
      section.hidden = false;
    } catch (err) {
      showError(err, "digest-error");
      section.hidden = false;
    }
  }

  document.addEventListener("DOMContentLoaded", load);
})();

// Experiments panel: the running experiment (or else the latest one) with each variant's live figures,
// CTR with its 95% interval drawn as a bar, and each variant's share of the impressions per minute.
//
// Read from GET /experiments and GET /experiments/<id> every REFRESH_MS. Those results are computed
// from the store, so they count every process's traffic (the Socket.IO figures above are this
// process's). Variant names come from whoever created the experiment: they are set as text only.

const REFRESH_MS = 5000;
const SIGNIFICANT = 0.05;

const percent = (value, digits = 1) => (value == null ? "–" : `${(value * 100).toFixed(digits)}%`);
const signedPercent = (value) => (value == null ? "–" : `${value >= 0 ? "+" : ""}${(value * 100).toFixed(1)}%`);
const money = (value) => (value == null ? "–" : value.toFixed(3));
const pValue = (value) => (value == null ? "–" : value < 0.001 ? "< 0.001" : value.toFixed(3));
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

// Each variant's share of the impressions of every minute in which the experiment served any.
export function trafficShares(variants) {
  const starts = [...new Set(variants.flatMap((v) => v.traffic.map((bucket) => bucket.start)))].sort((a, b) => a - b);
  const totals = starts.map((start) => variants.reduce(
    (sum, v) => sum + (v.traffic.find((bucket) => bucket.start === start)?.impressions ?? 0), 0));
  const shares = variants.map((v) => starts.map((start, i) =>
    (v.traffic.find((bucket) => bucket.start === start)?.impressions ?? 0) / totals[i]));
  return [starts, ...shares];
}

function cell(row, text, testId) {
  const td = row.insertCell();
  td.textContent = text;
  if (testId) {
    td.dataset.testid = testId;
  }
  return td;
}

// The CTR, its interval as text, and a bar: the interval as a band, the CTR as a tick, on a scale
// shared by every row (0 to the highest upper bound), so the variants compare at a glance.
function ctrCell(row, variant, scale) {
  const td = cell(row, "", "variant-ctr");
  const figure = document.createElement("span");
  figure.textContent = percent(variant.ctr);
  const interval = document.createElement("span");
  interval.className = "muted";
  interval.dataset.testid = "variant-ctr-ci";
  interval.textContent = variant.ctr_ci ? ` ${percent(variant.ctr_ci[0])}–${percent(variant.ctr_ci[1])}` : "";
  const bar = document.createElement("div");
  bar.className = "ci-bar";
  if (variant.ctr_ci) {
    const [low, high] = variant.ctr_ci.map((value) => (100 * value) / scale);
    const band = document.createElement("span");
    band.className = "ci-band";
    band.style.left = `${low}%`;
    band.style.width = `${high - low}%`;
    const tick = document.createElement("span");
    tick.className = "ci-tick";
    tick.style.left = `${(100 * variant.ctr) / scale}%`;
    bar.append(band, tick);
  }
  td.append(figure, interval, bar);
}

function showVariants(byTestId, experiment) {
  const body = byTestId("experiment-variants");
  body.replaceChildren();
  const scale = Math.max(0.01, ...experiment.variants.map((v) => v.ctr_ci?.[1] ?? 0));
  for (const variant of experiment.variants) {
    const row = body.insertRow();
    row.dataset.testid = "variant-row";
    row.dataset.variant = variant.name;
    row.classList.toggle("significant", variant.p_value != null && variant.p_value < SIGNIFICANT);
    const control = variant.name === experiment.control && variant.name !== "control";
    cell(row, control ? `${variant.name} (control)` : variant.name, "variant-name");
    cell(row, percent(variant.share, 0), "variant-share");
    cell(row, String(variant.users), "variant-users");
    cell(row, String(variant.impressions), "variant-impressions");
    cell(row, String(variant.clicks), "variant-clicks");
    ctrCell(row, variant, scale);
    cell(row, percent(variant.conversion_rate), "variant-conversion");
    cell(row, money(variant.revenue_per_impression), "variant-revenue");
    cell(row, signedPercent(variant.lift), "variant-lift");
    cell(row, pValue(variant.p_value), "variant-p");
  }
}

export function startExperimentsPanel({ byTestId, makeChart, charts, headers }) {
  let shownId = null;  // the experiment the traffic chart was made for (its series are its variants)

  function showTraffic(experiment) {
    if (experiment.experiment_id !== shownId) {
      charts.traffic?.destroy();
      charts.traffic = makeChart("traffic", {
        series: experiment.variants.map((v) => [v.name, null]),
        format: (value) => `${Math.round(value * 100)}%`,
        range: [0, 1],
        points: true,
      });
      shownId = experiment.experiment_id;
    }
    const data = trafficShares(experiment.variants);
    charts.traffic.setData(data);
    if (data[0].length === 1) {  // a new experiment's first minute: uPlot would span a day; a minute each side
      charts.traffic.setScale("x", { min: data[0][0] - 60, max: data[0][0] + 60 });
    }
    byTestId("chart-traffic").dataset.points = String(data[0].length);
  }

  function show(experiment) {
    byTestId("experiment-empty").hidden = experiment !== null;
    byTestId("experiment-detail").hidden = experiment === null;
    if (experiment === null) {
      return;
    }
    byTestId("experiment-name").textContent = experiment.name;
    byTestId("experiment-status").textContent = [
      experiment.status, `${experiment.allocation} allocation`, `reward: ${experiment.reward}`,
      `since ${clock(experiment.created_at)}`, ...(experiment.stopped_at ? [`stopped ${clock(experiment.stopped_at)}`] : []),
    ].join(" · ");
    showVariants(byTestId, experiment);
    showTraffic(experiment);
  }

  async function fetchJson(path) {
    const answer = await fetch(path, { headers: headers() });
    if (!answer.ok) {
      throw new Error(`${path}: ${answer.status}`);
    }
    return answer.json();
  }

  async function refresh() {
    try {
      const { experiments } = await fetchJson("/experiments");  // newest first
      const chosen = experiments.find((e) => e.status === "running") ?? experiments[0];
      show(chosen ? await fetchJson(`/experiments/${encodeURIComponent(chosen.experiment_id)}`) : null);
      byTestId("experiment-error").textContent = "";
    } catch (error) {
      byTestId("experiment-error").textContent = `experiments unavailable (${error.message})`;
    }
  }

  refresh();
  return setInterval(refresh, REFRESH_MS);
}

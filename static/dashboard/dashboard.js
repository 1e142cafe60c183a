// Monitoring dashboard: six uPlot charts of the `dashboard_stats` messages the server emits once a
// second over Socket.IO (web/dashboard.py), plus the latest values as text, and the experiments
// panel (experiments.js).
//
// When the server has an API_KEY, `subscribe_dashboard` needs it: the page takes it from `?key=`,
// or asks for it in the password box when the server turns the subscription down.
// `window.dashboard` exposes the messages and charts for the browser console and the browser test.

import { startExperimentsPanel } from "./experiments.js";

const POINTS = 120;  // two minutes at one message a second
const CHART_HEIGHT = 150;
const KINDS = ["recommendations", "profiles", "similar", "popular"];
const COLORS = ["#2f6fdb", "#d64545", "#2e9d5b", "#d9a21b", "#8e59c4"];

const percent = (value) => (value == null ? "–" : `${(value * 100).toFixed(1)}%`);
const fixed = (digits) => (value) => (value == null ? "–" : value.toFixed(digits));
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

// One entry per chart: its series (a label and how to read the value from a message) and how to
// show the y values.
const CHARTS = {
  requests: { series: [["requests/s", (m) => m.requests_per_second]], format: fixed(1) },
  latency: { series: [["p50 ms", (m) => m.p50_ms], ["p99 ms", (m) => m.p99_ms]], format: fixed(1) },
  cache: {
    series: [["overall", (m) => m.cache_hit_rate.overall],
             ...KINDS.map((kind) => [kind, (m) => m.cache_hit_rate[kind] ?? null])],
    format: (value) => `${Math.round(value * 100)}%`,
    range: [0, 1],
  },
  events: { series: [["events/s", (m) => m.events_per_second]], format: fixed(1) },
  users: { series: [["users", (m) => m.connected_users]], format: fixed(0), integer: true },
  retrain: { series: [["fit seconds", (m) => m.last_retrain.duration_seconds]], format: fixed(2), stepped: true },
};

const state = {
  socket: null,
  key: new URLSearchParams(window.location.search).get("key"),
  messages: [],  // the latest POINTS messages, oldest first: the one source of every chart
  charts: {},    // chart id -> uPlot
};
window.dashboard = state;

function byTestId(testId) {
  return document.querySelector(`[data-testid="${testId}"]`);
}

function setConnection(status, text) {
  byTestId("connection-dot").dataset.state = status;
  byTestId("connection-text").textContent = text;
}

// ---- charts ----------------------------------------------------------------------------------

function makeChart(id, { series, format, range, stepped, integer, points }) {
  const element = byTestId(`chart-${id}`);
  const options = {
    width: element.clientWidth,
    height: CHART_HEIGHT,
    legend: { show: series.length > 1, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true },
      y: { range: range ?? ((chart, min, max) => [0, Math.max(1, max) * 1.15]) },
    },
    axes: [
      { space: 70, values: (chart, ticks) => ticks.map(clock) },
      { size: 48, values: (chart, ticks) => ticks.map(format), ...(integer ? { incrs: INTEGER_STEPS } : {}) },
    ],
    series: [
      {},
      ...series.map(([label], index) => ({
        label,
        stroke: COLORS[index % COLORS.length],
        width: 2,
        points: { show: Boolean(points), size: 6 },
        ...(stepped ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}),
      })),
    ],
  };
  const chart = new uPlot(options, [[], ...series.map(() => [])], element);
  new ResizeObserver(() => {
    if (chart.root.isConnected) {  // the experiments panel replaces its chart when the experiment changes
      chart.setSize({ width: element.clientWidth, height: CHART_HEIGHT });
    }
  }).observe(element);
  return chart;
}

function redraw() {
  const times = state.messages.map((m) => m.time);
  for (const [id, { series }] of Object.entries(CHARTS)) {
    state.charts[id].setData([times, ...series.map(([, read]) => state.messages.map(read))]);
    byTestId(`chart-${id}`).dataset.points = String(times.length);
  }
  const latest = state.messages.at(-1);
  if (latest) {
    showValues(latest);
  }
}

function showValues(m) {
  byTestId("last-update").textContent = clock(m.time);
  byTestId("value-requests").textContent = fixed(1)(m.requests_per_second);
  byTestId("value-p50").textContent = fixed(2)(m.p50_ms);
  byTestId("value-p99").textContent = fixed(2)(m.p99_ms);
  byTestId("value-cache").textContent = percent(m.cache_hit_rate.overall);
  byTestId("value-cache-kinds").textContent = KINDS
    .filter((kind) => m.cache_hit_rate[kind] != null)
    .map((kind) => `${kind} ${percent(m.cache_hit_rate[kind])}`)
    .join(" · ");
  byTestId("value-events").textContent = fixed(1)(m.events_per_second);
  byTestId("value-users").textContent = String(m.connected_users);
  const retrain = m.last_retrain;
  byTestId("value-retrain").textContent =
    `${clock(retrain.time)} · ${retrain.duration_seconds.toFixed(2)} s · model #${m.model_version}`;
}

// ---- Socket.IO ---------------------------------------------------------------------------------

function subscribe() {
  state.socket.emit("subscribe_dashboard", state.key ? { key: state.key } : {}, (answer) => {
    if (answer.error) {
      setConnection("unauthorized", "API key needed");
      byTestId("key-form").hidden = false;
      byTestId("key-message").textContent = state.key ? answer.message : "";
      return;
    }
    byTestId("key-form").hidden = true;
    setConnection("connected", "connected");
    state.messages = answer.history.slice(-POINTS);  // replaces what an earlier connection showed
    redraw();
  });
}

function onStats(message) {
  state.messages.push(message);
  if (state.messages.length > POINTS) {
    state.messages.shift();
  }
  redraw();
}

function connect() {
  state.socket = io();
  state.socket.on("connect", subscribe);  // also after a reconnect: the new connection is in no room
  state.socket.on("disconnect", () => setConnection("disconnected", "disconnected"));
  state.socket.on("connect_error", () => setConnection("disconnected", "cannot reach the server"));
  state.socket.on("dashboard_stats", onStats);
}

byTestId("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = byTestId("key-input").value;
  subscribe();
});

if (typeof uPlot === "undefined" || typeof io === "undefined") {
  setConnection("disconnected", "chart or Socket.IO library missing: run npm ci on the server");
} else {
  for (const [id, chart] of Object.entries(CHARTS)) {
    state.charts[id] = makeChart(id, chart);
  }
  connect();
  startExperimentsPanel({
    byTestId, makeChart, charts: state.charts, headers: () => (state.key ? { "X-API-Key": state.key } : {}),
  });
}

// Usage: each key's verifications in the list (last 24 h), a key's chart in a dialog, and the
// tenant's overview page (its chart and its top keys), all read from the dashboard's usage API.

import { SignedOut } from "./api.js";
import { api } from "./api.js";
import { attempt } from "./api.js";
import { RESULTS } from "./chart.js";
import { drawChart } from "./chart.js";
import { legend } from "./chart.js";
import { number } from "./chart.js";
import { reasons } from "./chart.js";
import { refusedOf } from "./chart.js";
import { $ } from "./dom.js";
import { cell } from "./dom.js";
import { el } from "./dom.js";
import { quoted } from "./dom.js";
import { setMessage } from "./dom.js";
import { shortTime } from "./dom.js";
import { show } from "./dom.js";

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const LIST_TOP = 1000; // the API's largest top: one call covers every key of a page
const PERIODS = {
  hour: { button: "24 hours", words: "the last 24 hours", unit: "hour" },
  day: { button: "30 days", words: "the last 30 days", unit: "day" },
};

export function rangeStart(granularity, now = Date.now()) {
  // 24 whole UTC hours (the current one included) or 30 whole UTC days: the buckets the API counts in.
  if (granularity === "day") return new Date(Math.floor(now / DAY) * DAY - 29 * DAY);
  return new Date(Math.floor(now / HOUR) * HOUR - 23 * HOUR);
}

function query(granularity, extra) {
  const parameters = new URLSearchParams({ since: rangeStart(granularity).toISOString(), granularity, ...extra });
  return "?" + parameters.toString();
}

const keyUsagePath = (id) => "/dashboard/api-keys/" + encodeURIComponent(id) + "/usage";
const totalOf = (counts) => RESULTS.reduce((sum, result) => sum + (counts[result] || 0), 0);

// ---------- a chart with its period switch, legend and table ----------

class UsagePanel {
  // One chart in root (an empty div of the page): load(granularity) answers the API's data.
  constructor(root, load, loaded) {
    this.load = load;
    this.loaded = loaded || (() => {});
    this.granularity = "hour";
    this.data = null;
    this.generation = 0;
    this.buttons = Object.entries(PERIODS).map(([granularity, period]) =>
      el(
        "button",
        {
          type: "button",
          className: "secondary",
          "aria-pressed": "false",
          "data-granularity": granularity,
          onclick: () => this.show(granularity),
        },
        period.button,
      ),
    );
    this.error = el("p", { className: "error", role: "alert", hidden: true });
    this.legend = el("div", { className: "legend-box" });
    this.chart = el("div", { className: "chart-box" });
    this.reasons = el("p", { className: "hint reasons", hidden: true });
    this.table = el("table", { className: "usage-table" });
    this.details = el(
      "details",
      { className: "usage-numbers" },
      el("summary", {}, "The numbers, as a table"),
      el("div", { className: "table-wrap" }, this.table),
    );
    root.replaceChildren(
      el("div", { className: "period", role: "group", "aria-label": "Period" }, ...this.buttons),
      this.error,
      this.legend,
      this.chart,
      this.reasons,
      this.details,
    );
    // Drawn in pixels, not scaled: labels keep their size at 360 px. A new width draws it again.
    let drawnWidth = 0;
    new ResizeObserver(() => {
      const width = this.chart.clientWidth;
      if (this.data && width && width !== drawnWidth) {
        drawnWidth = width;
        this.draw();
      }
    }).observe(this.chart);
  }

  async show(granularity) {
    this.granularity = granularity || this.granularity;
    for (const button of this.buttons) {
      button.setAttribute("aria-pressed", String(button.dataset.granularity === this.granularity));
    }
    const generation = ++this.generation;
    this.chart.setAttribute("aria-busy", "true");
    await attempt(this.error, async () => {
      const data = await this.load(this.granularity);
      if (generation !== this.generation) return; // another period or key was asked for meanwhile
      this.data = data;
      this.draw();
      this.fillTable();
      this.loaded(data);
    });
    if (generation === this.generation) this.chart.removeAttribute("aria-busy");
  }

  clear() {
    this.generation += 1;
    this.data = null;
    setMessage(this.error, "");
    for (const node of [this.legend, this.chart, this.table]) node.replaceChildren();
    setMessage(this.reasons, "");
  }

  draw() {
    const { totals, granularity } = this.data;
    const period = PERIODS[granularity] || PERIODS.hour;
    const refused = refusedOf(totals);
    const description =
      "Bar chart of verifications per " + period.unit + " over " + period.words + ", valid and refused stacked: " +
      number(totals.valid || 0) + " valid and " + number(refused) + " refused in all. The table below has the numbers.";
    this.legend.replaceChildren(legend(totals));
    drawChart(this.chart, this.data, description);
    const why = reasons(totals);
    setMessage(this.reasons, why ? "Refused: " + why + "." : totalOf(totals) ? "" : "No verifications in this period.");
  }

  fillTable() {
    const { buckets, totals, granularity } = this.data;
    const day = granularity === "day";
    const header = (text, className) => el("th", { scope: "col", className }, text);
    const numbers = (counts) => [
      el("td", { className: "number", "data-result": "valid" }, number(counts.valid || 0)),
      el("td", { className: "number", "data-result": "refused" }, number(refusedOf(counts))),
      el("td", { "data-result": "reasons" }, reasons(counts)),
    ];
    const when = (bucket) => {
      // Days are the API's UTC days; hours in the browser's zone, like every other time on the page.
      if (day) return el("time", { datetime: bucket.start, title: bucket.start }, bucket.start.slice(0, 10));
      const [date, clock] = shortTime(bucket.start).split(" ");
      const attributes = { datetime: bucket.start, title: bucket.start };
      return el("time", attributes, el("span", {}, date), " ", el("span", {}, clock));
    };
    this.table.replaceChildren(
      el(
        "caption",
        {},
        day ? "Verifications per day (UTC days), oldest first" : "Verifications per hour (your time), oldest first",
      ),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          header(day ? "Day" : "Hour"),
          header("Valid", "number"),
          header("Refused", "number"),
          header("Why refused"),
        ),
      ),
      el(
        "tbody",
        {},
        ...buckets.map((bucket) =>
          el("tr", { "data-start": bucket.start }, el("th", { scope: "row" }, when(bucket)), ...numbers(bucket)),
        ),
      ),
      el("tfoot", {}, el("tr", {}, el("th", { scope: "row" }, "Total"), ...numbers(totals))),
    );
  }
}

// ---------- the list: each key's verifications in the last 24 hours ----------

export function usageCell(key, open) {
  // The count (filled in by showListCounts) and the button that opens the key's chart.
  return [
    el("span", { className: "usage-count" }, "\u2026"),
    " ",
    el(
      "button",
      { type: "button", className: "secondary usage-open", "aria-label": "Usage " + key.name, onclick: open },
      "Usage",
    ),
  ];
}

export async function listCounts() {
  // One call for the whole list: the tenant's top keys over the last 24 hours. Never rejects, so
  // the list can start it before its own request and wait for it after.
  try {
    const answer = await api("GET", "/dashboard/usage" + query("hour", { top: LIST_TOP }));
    const counts = new Map(answer.data.topKeys.map((item) => [item.id, totalOf(item.totals)]));
    return { counts, complete: answer.data.topKeys.length < LIST_TOP, since: answer.data.since };
  } catch (error) {
    return { error };
  }
}

export function showListCounts(result) {
  for (const row of document.querySelectorAll("#keys-body tr[data-key-id]")) {
    const node = row.querySelector(".usage-count");
    if (!node) continue;
    if (result.error) {
      if (result.error instanceof SignedOut) return;
      node.textContent = "?";
      node.title = "Usage could not be read: " + result.error.message;
      continue;
    }
    let count = result.counts.get(row.dataset.keyId);
    // Absent from the top keys: none, unless the top list was full (then at most its last one's count).
    if (count === undefined && result.complete) count = 0;
    node.textContent = count === undefined ? "\u2264 " + number(Math.min(...result.counts.values())) : number(count);
    if (count !== undefined) node.dataset.count = String(count);
    node.title = "Verifications since " + shortTime(result.since) + " (your time)";
  }
}

// ---------- a key's chart, in a dialog ----------

let keyPanel = null;

export function openKeyUsage(id, name, granularity = "hour") {
  // From the list (whose count is of 24 hours) the last 24 hours; from the overview, its period.
  $("key-usage-name").textContent = name === null ? "a deleted key" : quoted(name);
  $("key-usage-id").textContent = id;
  keyPanel.clear();
  keyPanel.keyId = id;
  $("usage-dialog").showModal();
  keyPanel.show(granularity);
}

// ---------- the tenant's overview ----------

let tenantPanel = null;

function topRow(item) {
  const deleted = item.name === null; // its history outlives it, readable by its id
  const name = deleted
    ? el("span", { className: "muted" }, "deleted key")
    : el("span", { className: "key-name" }, item.name);
  const label = deleted ? "deleted key " + item.id : item.name;
  return el(
    "tr",
    { "data-key-id": item.id },
    cell("Key", name, el("br"), el("small", { className: "muted" }, item.id)),
    cell("Valid", number(item.totals.valid || 0)),
    cell("Refused", number(refusedOf(item.totals))),
    cell("Total", number(totalOf(item.totals))),
    el(
      "td",
      { className: "actions-cell" },
      el(
        "button",
        {
          type: "button",
          className: "secondary",
          "aria-label": "Usage " + label,
          onclick: () => openKeyUsage(item.id, item.name, tenantPanel.granularity),
        },
        "Usage",
      ),
    ),
  );
}

function showTopKeys(data) {
  $("top-body").replaceChildren(...data.topKeys.map(topRow));
  show($("top-empty"), data.topKeys.length === 0);
  show($("top-table"), data.topKeys.length > 0);
  $("top-caption").textContent = "The keys verified most over " + PERIODS[data.granularity].words + ", most first";
}

export function loadUsage() {
  tenantPanel.show();
}

// ---------- wiring ----------

export function wireUsage() {
  keyPanel = new UsagePanel($("key-usage"), async (granularity) => {
    const answer = await api("GET", keyUsagePath(keyPanel.keyId) + query(granularity));
    return answer.data;
  });
  tenantPanel = new UsagePanel(
    $("tenant-usage"),
    async (granularity) => (await api("GET", "/dashboard/usage" + query(granularity))).data,
    showTopKeys,
  );
  $("usage-dialog").addEventListener("close", () => keyPanel.clear());
}

export function clearUsage() {
  keyPanel.clear();
  tenantPanel.clear();
  $("top-body").replaceChildren();
}

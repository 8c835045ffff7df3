// The usage chart: valid and refused verifications per bucket, stacked bars in an SVG built with
// DOM calls. No chart library and no inline style (the CSP allows neither): sizes are SVG
// attributes, colours come from console.css by class, so the dark theme applies too.

import { el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

// The API's result names, valid first; every other one is a refusal.
export const RESULTS = [
  "valid",
  "invalidSecret",
  "disabled",
  "expired",
  "wrongEnvironment",
  "insufficientScope",
  "rateLimited",
  "usageExceeded",
];
export const REFUSALS = RESULTS.slice(1);
export const RESULT_NAMES = {
  valid: "valid",
  invalidSecret: "wrong secret",
  disabled: "disabled",
  expired: "expired",
  wrongEnvironment: "wrong environment",
  insufficientScope: "missing scope",
  rateLimited: "rate limited",
  usageExceeded: "out of credits",
};

const HEIGHT = 200;
const MARGIN = { top: 10, right: 4, bottom: 24, left: 8 };
const FONT = 12; // px; the labels' width is estimated from it (digits and short dates are about 0.6 em)
const GAP = 12; // px at least between two time or date labels
// Label every n-th bar, n one of these: every 3 or 6 hours, every week, reads better than every 5.
const LABEL_STEPS = { hour: [1, 2, 3, 4, 6, 8, 12], day: [1, 2, 3, 5, 7, 10, 15] };

export const number = (n) => new Intl.NumberFormat().format(n);

export function refusedOf(counts) {
  return REFUSALS.reduce((sum, result) => sum + (counts[result] || 0), 0);
}

export function bucketLabel(iso, granularity) {
  // Hours in the browser's zone (what the user's day looks like); days are UTC days, as the API counts them.
  const date = new Date(iso);
  if (granularity === "day") {
    return new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" }).format(date);
  }
  return new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(date);
}

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function niceStep(rough) {
  // 1, 2 or 5 times a power of ten, at least 1: counts are whole numbers.
  if (rough <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= rough) return factor * power;
  return 10 * power;
}

function axis(largest) {
  // At most four gridlines above zero, the top one at or above the tallest bar.
  const step = niceStep(Math.max(largest, 1) / 4);
  return { step, top: Math.max(step, Math.ceil(largest / step) * step) };
}

function round(value) {
  return Math.round(value * 100) / 100;
}

export function drawChart(box, data, description) {
  // Replace box's content with the chart of data (an answer's data: buckets and granularity), as wide
  // as box is now. The bars carry their numbers (data-valid, data-refused) for tests and tooltips.
  const width = Math.max(box.clientWidth, 240);
  const buckets = data.buckets;
  const totals = buckets.map((bucket) => ({ valid: bucket.valid || 0, refused: refusedOf(bucket) }));
  const { step, top } = axis(Math.max(0, ...totals.map((t) => t.valid + t.refused)));
  const left = MARGIN.left + Math.ceil(number(top).length * FONT * 0.62);
  const plotWidth = width - left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const bottom = MARGIN.top + plotHeight;
  const slot = plotWidth / Math.max(buckets.length, 1);
  const barWidth = Math.max(1, round(slot * 0.72));
  const scale = plotHeight / top;

  const chart = svg("svg", {
    class: "chart",
    width,
    height: HEIGHT,
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": description,
    "data-since": data.since,
    "data-until": data.until,
    "data-granularity": data.granularity,
    "data-top": top,
    "data-plot-height": plotHeight,
  });
  for (let value = 0; value <= top; value += step) {
    const y = round(bottom - value * scale);
    chart.append(
      svg("line", { class: value ? "grid" : "baseline", x1: left, x2: width - MARGIN.right, y1: y, y2: y }),
      svg("text", { class: "tick", x: left - 6, y: y + 4, "text-anchor": "end" }, number(value)),
    );
  }
  // Label every few bars, counted back from the newest (the one people look for).
  const labels = buckets.map((bucket) => bucketLabel(bucket.start, data.granularity));
  const labelWidth = Math.max(0, ...labels.map((text) => text.length)) * FONT * 0.62 + GAP;
  const needed = Math.ceil(labelWidth / slot);
  const every = (LABEL_STEPS[data.granularity] || LABEL_STEPS.hour).find((n) => n >= needed) || needed;
  buckets.forEach((bucket, index) => {
    const { valid, refused } = totals[index];
    const x = round(left + index * slot + (slot - barWidth) / 2);
    const validHeight = round(valid * scale);
    const refusedHeight = round(refused * scale);
    const label = labels[index];
    const title = label + ": " + number(valid) + " valid, " + number(refused) + " refused";
    chart.append(
      svg(
        "g",
        { class: "bar", "data-start": bucket.start, "data-valid": valid, "data-refused": refused },
        svg("title", {}, title),
        // A transparent column the whole height: the tooltip shows over short and empty bars too.
        svg("rect", {
          class: "hit",
          x: round(left + index * slot),
          y: MARGIN.top,
          width: round(slot),
          height: plotHeight,
        }),
        svg("rect", { class: "valid", x, y: round(bottom - validHeight), width: barWidth, height: validHeight }),
        svg("rect", {
          class: "refused",
          x,
          y: round(bottom - validHeight - refusedHeight),
          width: barWidth,
          height: refusedHeight,
        }),
      ),
    );
    if ((buckets.length - 1 - index) % every) return;
    const centre = left + (index + 0.5) * slot;
    // The first and last labels stay inside the picture.
    let anchor = "middle";
    let at = centre;
    if (centre - labelWidth / 2 < 0) [anchor, at] = ["start", Math.max(0, centre - slot / 2)];
    else if (centre + labelWidth / 2 > width) [anchor, at] = ["end", width];
    chart.append(svg("text", { class: "tick", x: round(at), y: HEIGHT - 6, "text-anchor": anchor }, label));
  });
  box.replaceChildren(chart);
  return chart;
}

export function legend(totals) {
  // The two colours, named, with the range's totals: what a reader checks the bars against.
  const item = (name, label, value) =>
    el(
      "li",
      { "data-result": name },
      el("span", { className: "swatch " + name, "aria-hidden": "true" }),
      label + " ",
      el("strong", {}, number(value)),
    );
  return el(
    "ul",
    { className: "legend" },
    item("valid", "Valid", totals.valid || 0),
    item("refused", "Refused", refusedOf(totals)),
  );
}

export function reasons(counts) {
  // "3 wrong secret, 2 missing scope": the refusals by result, the ones that happened only.
  return REFUSALS.filter((result) => counts[result])
    .map((result) => number(counts[result]) + " " + RESULT_NAMES[result])
    .join(", ");
}

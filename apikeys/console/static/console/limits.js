// A key's rate limit and quota: shown in the list, read from and written to the create and edit forms.
//
// The forms send what the user typed as whole numbers and leave the bounds to the API (1 to
// 1,000,000 requests, a window of up to a day, ...): its 400 names the field, and the dialog shows it.

import { InputError } from "./dom.js";
import { $ } from "./dom.js";
import { el } from "./dom.js";

// The form's units for a window, largest first: a period is shown in the largest that divides it.
const UNITS = [
  ["hours", 3600, "hour"],
  ["minutes", 60, "minute"],
  ["seconds", 1, "second"],
];

const number = (n) => new Intl.NumberFormat().format(n);

function periodParts(seconds) {
  for (const [unit, size] of UNITS) if (seconds % size === 0) return [seconds / size, unit];
  return [seconds, "seconds"];
}

function describePeriod(seconds) {
  const [count, unit] = periodParts(seconds);
  const singular = UNITS.find(([name]) => name === unit)[2];
  return count === 1 ? singular : number(count) + " " + unit;
}

// ---------- the list ----------

export function limitsCell(key) {
  // "Rate: 100 per minute" and "Credits: 1,000 left, refill to 5,000 daily"; "none" when the key has neither.
  const items = [];
  if (key.rateLimit) {
    const { limit, periodSeconds } = key.rateLimit;
    const text = "Rate: " + number(limit) + " per " + describePeriod(periodSeconds);
    items.push(el("li", { className: "rate-limit" }, text));
  }
  if (key.quota) {
    const { remaining, refillAmount, refillInterval } = key.quota;
    const refill = refillInterval ? "refill to " + number(refillAmount) + " " + refillInterval : "no refill";
    items.push(el("li", { className: "quota" }, "Credits: " + number(remaining) + " left, " + refill));
  }
  if (!items.length) return el("span", { className: "muted" }, "none");
  return el("ul", { className: "limits" }, ...items);
}

// ---------- the forms ----------

function wholeNumber(input, label) {
  // Empty is "not set"; anything else must be a whole number, which the API then bounds.
  const text = input.value.trim();
  if (input.validity.badInput) throw new InputError(label + " must be a whole number.");
  if (!text) return null;
  const value = Number(text);
  if (!Number.isInteger(value)) throw new InputError(label + " must be a whole number.");
  return value;
}

export function readRateLimit(prefix) {
  // {limit, periodSeconds}, or null when Requests is empty (no limit).
  const limit = wholeNumber($(prefix + "-rate-limit"), "Requests");
  if (limit === null) return null;
  const every = wholeNumber($(prefix + "-rate-period"), "Per");
  if (every === null) throw new InputError("Say per how many seconds, minutes or hours the requests are counted.");
  const unit = UNITS.find(([name]) => name === $(prefix + "-rate-unit").value) || UNITS[2];
  return { limit, periodSeconds: every * unit[1] };
}

export function readQuota(prefix) {
  // {remaining, refillAmount, refillInterval}, or null when every quota field is empty (unlimited).
  const remaining = wholeNumber($(prefix + "-quota-remaining"), "Credits left");
  const interval = $(prefix + "-quota-interval").value || null; // "", "daily" or "monthly"
  const amount = wholeNumber($(prefix + "-quota-amount"), "Refill to");
  if (remaining === null && interval === null && amount === null) return null;
  if (remaining === null) throw new InputError("Give the credits left (the refill amount, say), or empty the quota.");
  if (interval === null && amount !== null) throw new InputError("Choose daily or monthly Refill, or empty Refill to.");
  if (interval !== null && amount === null) throw new InputError("Say how many credits a refill sets (Refill to).");
  return { remaining, refillAmount: amount, refillInterval: interval };
}

export function fillLimits(prefix, key) {
  // The edit form shows the key's limits as the list answered them; empty fields for none.
  const rate = key.rateLimit;
  const [every, unit] = rate ? periodParts(rate.periodSeconds) : [1, "minutes"];
  $(prefix + "-rate-limit").value = rate ? String(rate.limit) : "";
  $(prefix + "-rate-period").value = String(every);
  $(prefix + "-rate-unit").value = unit;
  const quota = key.quota;
  $(prefix + "-quota-remaining").value = quota ? String(quota.remaining) : "";
  $(prefix + "-quota-interval").value = quota && quota.refillInterval ? quota.refillInterval : "";
  $(prefix + "-quota-amount").value = quota && quota.refillAmount != null ? String(quota.refillAmount) : "";
}

export function sameRateLimit(a, b) {
  if (!a || !b) return !a && !b;
  return a.limit === b.limit && a.periodSeconds === b.periodSeconds;
}

export function sameQuota(a, b) {
  if (!a || !b) return !a && !b;
  const fields = ["remaining", "refillAmount", "refillInterval"];
  return fields.every((field) => (a[field] ?? null) === (b[field] ?? null));
}

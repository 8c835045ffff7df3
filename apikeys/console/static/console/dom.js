// DOM helpers. Everything shown is inserted as text (createElement, textContent), never as HTML:
// key names, scopes and metadata are user input.

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function setMessage(node, text) {
  node.textContent = text || "";
  show(node, Boolean(text));
}

let statusTimer = null;

export function announce(text) {
  // The polite live region under the header: screen readers read it, and it fades after a while.
  const status = $("status");
  status.textContent = text;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => {
    status.textContent = "";
  }, 8000);
}

export function busy(form, value) {
  for (const button of form.querySelectorAll("button")) button.disabled = value;
}

export function quoted(text) {
  return "\u201c" + text + "\u201d";
}

const pad = (n) => String(n).padStart(2, "0");

export function shortTime(iso) {
  // 2026-12-31 13:00 in the browser's zone: compact and unambiguous; the title has the exact UTC time.
  const date = new Date(iso);
  return (
    date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
    " " + pad(date.getHours()) + ":" + pad(date.getMinutes())
  );
}

export function timeCell(iso, empty) {
  if (!iso) return document.createTextNode(empty);
  // Day and time each in one piece: a narrow column breaks the line between them, not inside.
  const [day, clock] = shortTime(iso).split(" ");
  return el("time", { datetime: iso, title: iso }, el("span", {}, day), " ", el("span", {}, clock));
}

export function cell(label, ...children) {
  // One wrapper, so that at phone width the label and the value are the two columns of the card.
  return el("td", { "data-label": label }, el("div", {}, ...children));
}

export function pager(prefix, page, pageSize, total) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  $(prefix + "-page").textContent = "Page " + page + " of " + pages + " (" + total + " in all)";
  $(prefix + "-prev").disabled = page <= 1;
  $(prefix + "-next").disabled = page >= pages;
}

// ---------- form values ----------

export class InputError extends Error {}

export function parseScopes(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

export function parseMeta(text, label) {
  if (!text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InputError(label + " is not valid JSON: " + error.message);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new InputError(label + ' must be a JSON object, like {"team": "billing"}.');
  }
  return value;
}

export function localInputToIso(value) {
  // datetime-local has no zone: the browser reads it as local time; the API wants UTC.
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new InputError("The expiry is not a valid date and time.");
  return date.toISOString();
}

export function isoToLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return (
    date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
    "T" + pad(date.getHours()) + ":" + pad(date.getMinutes())
  );
}

// The audit log page: every change to the tenant's keys, newest first.

import { api } from "./api.js";
import { attempt } from "./api.js";
import { $ } from "./dom.js";
import { cell } from "./dom.js";
import { el } from "./dom.js";
import { pager } from "./dom.js";
import { show } from "./dom.js";
import { timeCell } from "./dom.js";

const PAGE_SIZE = 20;
let page = 1;

function entryRow(entry) {
  const actor = entry.actor === null || entry.actor === undefined
    ? el("span", { className: "muted" }, "unknown")
    : String(entry.actor);
  return el(
    "tr",
    { "data-entry-id": entry.id },
    cell("When", timeCell(entry.createdAt, "")),
    cell("Action", el("code", {}, entry.action)),
    cell("Key", el("code", {}, entry.keyId || "")),
    cell("Actor", actor),
  );
}

export async function loadAudit() {
  await attempt($("audit-error"), async () => {
    const answer = await api("GET", "/dashboard/audit-log?page=" + page + "&limit=" + PAGE_SIZE);
    const { items, total } = answer.data;
    $("audit-body").replaceChildren(...items.map(entryRow));
    show($("audit-empty"), total === 0);
    show($("audit-table"), total > 0);
    pager("audit", page, PAGE_SIZE, total);
  });
}

export function wireAudit() {
  $("audit-prev").addEventListener("click", () => {
    page -= 1;
    loadAudit();
  });
  $("audit-next").addEventListener("click", () => {
    page += 1;
    loadAudit();
  });
}

export function clearAudit() {
  page = 1;
  $("audit-body").replaceChildren();
}

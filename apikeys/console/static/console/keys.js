// The keys page: the list, and the dialogs that create, show once, edit, regenerate and delete.
//
// A secret (in the create and regenerate answers) goes to the screen and nowhere else: not to
// storage, not to the URL, not into any request; the dialog that shows it forgets it as it closes.

import { api } from "./api.js";
import { attempt } from "./api.js";
import { $ } from "./dom.js";
import { InputError } from "./dom.js";
import { announce } from "./dom.js";
import { busy } from "./dom.js";
import { cell } from "./dom.js";
import { el } from "./dom.js";
import { isoToLocalInput } from "./dom.js";
import { localInputToIso } from "./dom.js";
import { pager } from "./dom.js";
import { parseMeta } from "./dom.js";
import { parseScopes } from "./dom.js";
import { quoted } from "./dom.js";
import { setMessage } from "./dom.js";
import { shortTime } from "./dom.js";
import { show } from "./dom.js";
import { timeCell } from "./dom.js";
import { fillLimits } from "./limits.js";
import { limitsCell } from "./limits.js";
import { readQuota } from "./limits.js";
import { readRateLimit } from "./limits.js";
import { sameQuota } from "./limits.js";
import { sameRateLimit } from "./limits.js";
import { listCounts } from "./usage.js";
import { openKeyUsage } from "./usage.js";
import { showListCounts } from "./usage.js";
import { usageCell } from "./usage.js";

const PAGE_SIZE = 20;
const state = {
  page: 1,
  keys: new Map(), // id -> the key as the list answered it, for the dialogs
  current: null, // the key the open dialog acts on
  editShown: null, // what the edit form showed, to send only what changed
};

const keyPath = (id) => "/dashboard/api-keys/" + encodeURIComponent(id);

// ---------- the list ----------

export async function loadKeys() {
  await attempt($("keys-error"), async () => {
    const counting = listCounts(); // asked at the same time; it never rejects
    const answer = await api("GET", "/dashboard/api-keys?page=" + state.page + "&limit=" + PAGE_SIZE);
    const { items, total } = answer.data;
    if (!items.length && state.page > 1) {
      state.page -= 1; // the last key of the page went away
      return loadKeys();
    }
    state.keys = new Map(items.map((key) => [key.id, key]));
    $("keys-body").replaceChildren(...items.map(keyRow));
    show($("keys-empty"), total === 0);
    show($("keys-table"), total > 0);
    pager("keys", state.page, PAGE_SIZE, total);
    showListCounts(await counting);
  });
}

function action(label, key, className, onclick) {
  // The visible word, and a name that says which key ("Delete Billing backend") for screen readers.
  return el("button", { type: "button", className, "aria-label": label + " " + key.name, onclick }, label);
}

function breakAfterPrefix(text) {
  // A break opportunity after the prefix (pk_live_, key_), taken only when the ten columns need
  // the room: still one word to select and copy, and shown as one whenever it fits.
  const cut = text.lastIndexOf("_") + 1;
  return [text.slice(0, cut), el("wbr"), text.slice(cut)];
}

function keyRow(key) {
  const expired = key.expiresAt && new Date(key.expiresAt) <= new Date();
  const scopes = key.scopes && key.scopes.length
    ? el("ul", { className: "scopes" }, ...key.scopes.map((scope) => el("li", {}, el("code", {}, scope))))
    : el("span", { className: "muted" }, "none");
  const actions = el(
    "div",
    { className: "row-actions" },
    action("Edit", key, "secondary", () => openEdit(key.id)),
    action("Regenerate", key, "secondary", () => openRegenerate(key.id)),
    action(key.active ? "Disable" : "Enable", key, "secondary toggle", (event) => toggle(key.id, event.currentTarget)),
    action("Delete", key, "danger", () => openDelete(key.id)),
  );
  return el(
    "tr",
    { "data-key-id": key.id, className: key.active ? "" : "inactive" },
    cell(
      "Name",
      el("span", { className: "key-name" }, key.name),
      el("br"),
      el("small", { className: "muted" }, ...breakAfterPrefix(key.id)),
    ),
    cell("Environment", el("span", { className: "badge env-" + key.environment }, key.environment)),
    cell("Public key", el("code", { className: "public-key" }, ...breakAfterPrefix(key.publicKey))),
    cell("Status", el("span", { className: "badge " + (key.active ? "on" : "off") }, key.active ? "Active" : "Disabled")),
    cell("Created", timeCell(key.createdAt, "")),
    cell("Last used", timeCell(key.lastUsedAt, "never")),
    cell("Expires", timeCell(key.expiresAt, "never"), expired ? el("span", { className: "badge off" }, "expired") : null),
    cell("Scopes", scopes),
    cell("Limits", limitsCell(key)),
    cell("Last 24 h", ...usageCell(key, () => openKeyUsage(key.id, key.name))),
    el("td", { className: "actions-cell" }, actions),
  );
}

function keyFor(id) {
  state.current = state.keys.get(id) || null;
  return state.current;
}

function openDialog(id) {
  const dialog = $(id);
  const error = dialog.querySelector(".error");
  if (error) setMessage(error, "");
  dialog.showModal();
  return dialog;
}

// ---------- the secret, shown once ----------

function showSecret(name, fullKey, previousSecretExpiresAt) {
  $("secret-name").textContent = quoted(name);
  $("secret-value").value = fullKey;
  $("secret-copied").textContent = "";
  const grace = previousSecretExpiresAt
    ? "The previous secret keeps working until " + shortTime(previousSecretExpiresAt) + " (your local time)."
    : "";
  setMessage($("secret-grace"), grace);
  openDialog("secret-dialog");
  $("secret-value").focus();
  $("secret-value").select();
}

function forgetSecret() {
  // Shown once: when the dialog closes, the page holds the key nowhere.
  $("secret-value").value = "";
  $("secret-name").textContent = "";
  $("secret-copied").textContent = "";
}

function closeSecret() {
  // Forget first, in this same task: the dialog's close event comes later (a queued task),
  // and until then a hidden dialog would still hold the key.
  forgetSecret();
  $("secret-dialog").close();
}

function wireSecret() {
  const dialog = $("secret-dialog");
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", closeSecret);
  // Escape fires cancel before the dialog closes; close and the observer cover every other way
  // it can close (sign-out, close() from elsewhere, a browser that skips cancel).
  dialog.addEventListener("cancel", forgetSecret);
  dialog.addEventListener("close", forgetSecret);
  new MutationObserver(() => {
    if (!dialog.open) forgetSecret();
  }).observe(dialog, { attributes: true, attributeFilter: ["open"] });
}

async function copySecret() {
  const field = $("secret-value");
  try {
    await navigator.clipboard.writeText(field.value);
    $("secret-copied").textContent = "Copied to the clipboard.";
  } catch (error) {
    field.focus();
    field.select();
    $("secret-copied").textContent = "Press Ctrl+C (\u2318C on a Mac) to copy the selected key.";
  }
}

// ---------- create ----------

function openCreate() {
  $("create-form").reset();
  openDialog("create-dialog");
  $("create-name").focus();
}

async function submitCreate(event) {
  event.preventDefault();
  const form = $("create-form");
  await attempt($("create-error"), async () => {
    const name = $("create-name").value.trim();
    if (!name) throw new InputError("Give the key a name.");
    const body = { name, environment: $("create-environment").value };
    if ($("create-expires").value) body.expiresAt = localInputToIso($("create-expires").value);
    const scopes = parseScopes($("create-scopes").value);
    if (scopes.length) body.scopes = scopes;
    const rateLimit = readRateLimit("create");
    if (rateLimit) body.rateLimit = rateLimit;
    const quota = readQuota("create");
    if (quota) body.quota = quota;
    if ($("create-meta").value.trim()) body.meta = parseMeta($("create-meta").value, "Metadata");
    busy(form, true);
    try {
      const answer = await api("POST", "/dashboard/api-keys", body);
      $("create-dialog").close();
      form.reset();
      state.page = 1; // newest first: the new key is at the top of page 1
      announce("Created the key " + quoted(answer.data.name) + ".");
      showSecret(answer.data.name, answer.data.fullKey);
      loadKeys();
    } finally {
      busy(form, false);
    }
  });
}

// ---------- edit ----------

function openEdit(id) {
  const key = keyFor(id);
  if (!key) return;
  $("edit-key-name").textContent = quoted(key.name);
  $("edit-name").value = key.name;
  $("edit-expires").value = isoToLocalInput(key.expiresAt);
  $("edit-scopes").value = (key.scopes || []).join(" ");
  $("edit-meta").value = JSON.stringify(key.meta || {}, null, 2);
  fillLimits("edit", key);
  state.editShown = {
    name: $("edit-name").value,
    expires: $("edit-expires").value,
    scopes: $("edit-scopes").value,
    meta: $("edit-meta").value,
    rateLimit: key.rateLimit || null,
    quota: key.quota || null,
  };
  openDialog("edit-dialog");
  $("edit-name").focus();
}

async function submitEdit(event) {
  event.preventDefault();
  const key = state.current;
  const form = $("edit-form");
  await attempt($("edit-error"), async () => {
    const shown = state.editShown;
    const body = {};
    const name = $("edit-name").value.trim();
    if (!name) throw new InputError("The name cannot be empty.");
    if (name !== shown.name) body.name = name;
    // Only what changed: an unchanged expiry in the past would be refused, and it is not the user's edit.
    const expires = $("edit-expires").value;
    if (expires !== shown.expires) body.expiresAt = expires ? localInputToIso(expires) : null;
    if ($("edit-scopes").value !== shown.scopes) body.scopes = parseScopes($("edit-scopes").value);
    if ($("edit-meta").value !== shown.meta) body.meta = parseMeta($("edit-meta").value, "Metadata");
    // Compared by value, not by field: a quota sent sets the credits left, so an untouched one
    // must not go back with the count the list showed (requests may have used some since).
    const rateLimit = readRateLimit("edit");
    if (!sameRateLimit(rateLimit, shown.rateLimit)) body.rateLimit = rateLimit;
    const quota = readQuota("edit");
    if (!sameQuota(quota, shown.quota)) body.quota = quota;
    if (!Object.keys(body).length) {
      $("edit-dialog").close();
      announce("Nothing changed.");
      return;
    }
    busy(form, true);
    try {
      const answer = await api("PATCH", keyPath(key.id), body);
      $("edit-dialog").close();
      announce("Saved " + quoted(answer.data.name) + ".");
      loadKeys();
    } finally {
      busy(form, false);
    }
  });
}

// ---------- regenerate ----------

function openRegenerate(id) {
  const key = keyFor(id);
  if (!key) return;
  $("regenerate-form").reset();
  $("regenerate-key-name").textContent = quoted(key.name);
  openDialog("regenerate-dialog");
  $("regenerate-grace").focus();
}

async function submitRegenerate(event) {
  event.preventDefault();
  const key = state.current;
  const form = $("regenerate-form");
  await attempt($("regenerate-error"), async () => {
    const grace = $("regenerate-grace").value;
    // No body keeps the reference behaviour: the old secret fails at once.
    const body = grace ? { gracePeriodSeconds: Number(grace) } : undefined;
    busy(form, true);
    try {
      const answer = await api("POST", keyPath(key.id) + "/regenerate", body);
      $("regenerate-dialog").close();
      announce("Regenerated " + quoted(key.name) + ".");
      showSecret(key.name, answer.data.fullKey, answer.data.previousSecretExpiresAt);
      loadKeys();
    } finally {
      busy(form, false);
    }
  });
}

// ---------- enable / disable ----------

async function toggle(id, button) {
  const key = keyFor(id);
  if (!key) return;
  button.disabled = true;
  await attempt($("keys-error"), async () => {
    const answer = await api("POST", keyPath(id) + "/toggle");
    announce((answer.data.active ? "Enabled " : "Disabled ") + quoted(key.name) + ".");
    await loadKeys();
    // The row was rebuilt: keep the keyboard where it was.
    const again = document.querySelector('tr[data-key-id="' + CSS.escape(id) + '"] button.toggle');
    if (again) again.focus();
  });
  button.disabled = false;
}

// ---------- delete ----------

function openDelete(id) {
  const key = keyFor(id);
  if (!key) return;
  $("delete-key-name").textContent = quoted(key.name);
  openDialog("delete-dialog");
}

async function submitDelete(event) {
  event.preventDefault();
  const key = state.current;
  const form = $("delete-form");
  await attempt($("delete-error"), async () => {
    busy(form, true);
    try {
      await api("DELETE", keyPath(key.id));
      $("delete-dialog").close();
      announce("Deleted " + quoted(key.name) + ".");
      loadKeys();
    } finally {
      busy(form, false);
    }
  });
}

// ---------- wiring ----------

export function wireKeys() {
  $("new-key").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("edit-form").addEventListener("submit", submitEdit);
  $("regenerate-form").addEventListener("submit", submitRegenerate);
  $("delete-form").addEventListener("submit", submitDelete);
  wireSecret();
  $("keys-prev").addEventListener("click", () => {
    state.page -= 1;
    loadKeys();
  });
  $("keys-next").addEventListener("click", () => {
    state.page += 1;
    loadKeys();
  });
}

export function clearKeys() {
  closeSecret();
  state.page = 1;
  state.keys.clear();
  state.current = null;
  $("keys-body").replaceChildren();
}

// The apikeys console: a small single-page client of the public dashboard API.
//
// Rules this file keeps:
// - The bearer token lives in sessionStorage only (this tab), never in a cookie, a URL or a log.
// - A secret (create and regenerate answers) goes to the screen and nowhere else: not to storage,
//   not to the URL, not into any request; the dialog that shows it forgets it when it closes.
// - The DOM is built with createElement and textContent only: names and metadata are user input.
"use strict";

(function () {
  const TOKEN_KEY = "apikeys.console.token";
  const PAGE_SIZE = 20;
  const tenantClaim = document.body.dataset.tenantClaim || "tenantId";

  const state = {
    keysPage: 1,
    auditPage: 1,
    keys: new Map(), // id -> key as the list answered it, for the dialogs
    current: null, // the key a dialog is acting on
  };

  const $ = (id) => document.getElementById(id);

  // ---------- small DOM helpers (no innerHTML anywhere) ----------

  function el(tag, attributes, ...children) {
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

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setMessage(node, text) {
    node.textContent = text || "";
    show(node, Boolean(text));
  }

  let statusTimer = null;
  function announce(text) {
    const status = $("status");
    status.textContent = text;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => {
      status.textContent = "";
    }, 8000);
  }

  function timeCell(iso, empty) {
    if (!iso) return document.createTextNode(empty);
    return el("time", { datetime: iso, title: iso }, shortTime(iso));
  }

  function shortTime(iso) {
    // 2026-12-31 13:00 in the browser's zone: compact and unambiguous; the title has the exact UTC time.
    const date = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes())
    );
  }

  // ---------- the token ----------

  function getToken() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function claimsOf(token) {
    // For display only (tenant, expiry): the server is the one that checks the token.
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
      );
      const claims = JSON.parse(json);
      return claims && typeof claims === "object" ? claims : {};
    } catch (error) {
      return {};
    }
  }

  function takeTokenFromFragment() {
    // The dev link is /console#token=<jwt>: a fragment never reaches the server (so never its logs),
    // and it leaves the address bar and the history entry at once.
    if (!location.hash.startsWith("#token=")) return;
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    history.replaceState(null, "", location.pathname + location.search + "#keys");
    if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.keys.clear();
    $("keys-body").replaceChildren();
    $("audit-body").replaceChildren();
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    setMessage($("signin-error"), message);
    render();
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, message, errors) {
      super(message);
      this.status = status;
      this.errors = errors || null;
    }
  }

  class SignedOut extends Error {}

  async function api(method, path, body) {
    const token = getToken();
    if (!token) throw new SignedOut("Not signed in.");
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "The server could not be reached. Check your connection and try again.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    const message = payload && typeof payload.message === "string" ? payload.message : null;
    if (response.status === 401) {
      signOut("The server refused the token: " + (message || "it is not valid.") + " Sign in again.");
      throw new SignedOut(message || "Signed out.");
    }
    if (!response.ok) {
      throw new ApiError(response.status, message || "The request failed (HTTP " + response.status + ").",
        payload && payload.errors);
    }
    return payload;
  }

  function describe(error) {
    // "message" plus the field errors of a 400, e.g. "scopes: ..." (all text, never markup).
    const lines = [error.message];
    if (error.errors && typeof error.errors === "object") {
      for (const [field, problems] of Object.entries(error.errors)) {
        const text = Array.isArray(problems) ? problems.join(" ") : JSON.stringify(problems);
        lines.push(field + ": " + text);
      }
    }
    return lines.join("\n");
  }

  // Runs an action; a refused token has already sent the user to the sign-in page.
  async function attempt(errorNode, action) {
    setMessage(errorNode, "");
    try {
      await action();
    } catch (error) {
      if (error instanceof SignedOut) return;
      if (error instanceof ApiError || error instanceof InputError) setMessage(errorNode, describe(error));
      else setMessage(errorNode, "Something went wrong: " + error.message);
    }
  }

  class InputError extends Error {}

  // ---------- form values ----------

  function parseScopes(text) {
    return text.split(/[\s,]+/).filter(Boolean);
  }

  function parseMeta(text, label) {
    if (!text.trim()) return {};
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new InputError(label + " is not valid JSON: " + error.message);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new InputError(label + " must be a JSON object, like {\"team\": \"billing\"}.");
    }
    return value;
  }

  function localInputToIso(value) {
    // datetime-local has no zone: the browser reads it as local time; the API wants UTC.
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) throw new InputError("The expiry is not a valid date and time.");
    return date.toISOString();
  }

  function isoToLocalInput(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes())
    );
  }

  function busy(form, value) {
    for (const button of form.querySelectorAll("button")) button.disabled = value;
  }

  // ---------- views ----------

  function render() {
    const signedIn = Boolean(getToken());
    show($("nav"), signedIn);
    show($("sign-out"), signedIn);
    show($("who"), signedIn);
    const view = signedIn ? (location.hash === "#audit" ? "audit" : "keys") : "signin";
    show($("signin-view"), view === "signin");
    show($("keys-view"), view === "keys");
    show($("audit-view"), view === "audit");
    for (const [link, name] of [["nav-keys", "keys"], ["nav-audit", "audit"]]) {
      if (view === name) $(link).setAttribute("aria-current", "page");
      else $(link).removeAttribute("aria-current");
    }
    if (view === "signin") {
      document.title = "Sign in · apikeys console";
      $("signin-token").value = "";
      return;
    }
    const claims = claimsOf(getToken());
    const tenant = typeof claims[tenantClaim] === "string" ? claims[tenantClaim] : "?";
    $("who").textContent = "Tenant " + tenant;
    if (typeof claims.exp === "number") {
      $("who").title = "Token valid until " + shortTime(new Date(claims.exp * 1000).toISOString());
    }
    if (view === "keys") {
      document.title = "API keys · apikeys console";
      loadKeys();
    } else {
      document.title = "Audit log · apikeys console";
      loadAudit();
    }
  }

  function pager(prefix, page, total) {
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    $(prefix + "-page").textContent = "Page " + page + " of " + pages + " (" + total + " in all)";
    $(prefix + "-prev").disabled = page <= 1;
    $(prefix + "-next").disabled = page >= pages;
  }

  async function loadKeys() {
    await attempt($("keys-error"), async () => {
      const answer = await api("GET", "/dashboard/api-keys?page=" + state.keysPage + "&limit=" + PAGE_SIZE);
      const { items, total } = answer.data;
      if (!items.length && state.keysPage > 1) {
        state.keysPage -= 1; // the last key of a page went away
        return loadKeys();
      }
      state.keys = new Map(items.map((key) => [key.id, key]));
      $("keys-body").replaceChildren(...items.map(keyRow));
      show($("keys-empty"), total === 0);
      show($("keys-table"), total > 0);
      pager("keys", state.keysPage, total);
    });
  }

  function cell(label, ...children) {
    // One wrapper, so that at phone width the label and the value are the two columns of the card.
    return el("td", { "data-label": label }, el("div", {}, ...children));
  }

  function keyRow(key) {
    const expired = key.expiresAt && new Date(key.expiresAt) <= new Date();
    const scopes = key.scopes && key.scopes.length
      ? el("ul", { className: "scopes" }, ...key.scopes.map((s) => el("li", {}, el("code", {}, s))))
      : el("span", { className: "muted" }, "none");
    const actions = el(
      "div",
      { className: "row-actions" },
      el("button", { type: "button", className: "secondary", "aria-label": "Edit " + key.name,
        onclick: () => openEdit(key.id) }, "Edit"),
      el("button", { type: "button", className: "secondary", "aria-label": "Regenerate " + key.name,
        onclick: () => openRegenerate(key.id) }, "Regenerate"),
      el("button", { type: "button", className: "secondary",
        "aria-label": (key.active ? "Disable " : "Enable ") + key.name,
        onclick: (event) => toggle(key.id, event.currentTarget) }, key.active ? "Disable" : "Enable"),
      el("button", { type: "button", className: "danger", "aria-label": "Delete " + key.name,
        onclick: () => openDelete(key.id) }, "Delete"),
    );
    return el(
      "tr",
      { "data-key-id": key.id, className: key.active ? "" : "inactive" },
      cell("Name", el("span", { className: "key-name" }, key.name), el("br"),
        el("small", { className: "muted" }, key.id)),
      cell("Environment", el("span", { className: "badge env-" + key.environment }, key.environment)),
      cell("Public key", el("code", { className: "public-key" }, key.publicKey)),
      cell("Status", el("span", { className: "badge " + (key.active ? "on" : "off") },
        key.active ? "Active" : "Disabled")),
      cell("Created", timeCell(key.createdAt, "")),
      cell("Last used", timeCell(key.lastUsedAt, "never")),
      cell("Expires", timeCell(key.expiresAt, "never"), expired ? el("span", { className: "badge off" }, "expired")
        : null),
      cell("Scopes", scopes),
      el("td", { className: "actions-cell" }, actions),
    );
  }

  async function loadAudit() {
    await attempt($("audit-error"), async () => {
      const answer = await api("GET", "/dashboard/audit-log?page=" + state.auditPage + "&limit=" + PAGE_SIZE);
      const { items, total } = answer.data;
      $("audit-body").replaceChildren(
        ...items.map((entry) =>
          el(
            "tr",
            { "data-entry-id": entry.id },
            cell("When", timeCell(entry.createdAt, "")),
            cell("Action", el("code", {}, entry.action)),
            cell("Key", el("code", {}, entry.keyId || "")),
            cell("Actor", entry.actor === null || entry.actor === undefined
              ? el("span", { className: "muted" }, "unknown") : String(entry.actor)),
          ),
        ),
      );
      show($("audit-empty"), total === 0);
      show($("audit-table"), total > 0);
      pager("audit", state.auditPage, total);
    });
  }

  // ---------- actions ----------

  function openDialog(id) {
    const dialog = $(id);
    const error = dialog.querySelector(".error");
    if (error) setMessage(error, "");
    dialog.showModal();
    return dialog;
  }

  function showSecret(name, fullKey, previousSecretExpiresAt) {
    $("secret-name").textContent = "\u201c" + name + "\u201d";
    $("secret-value").value = fullKey;
    $("secret-copied").textContent = "";
    const grace = $("secret-grace");
    if (previousSecretExpiresAt) {
      setMessage(grace, "The previous secret keeps working until " +
        shortTime(previousSecretExpiresAt) + " (your local time).");
    } else {
      setMessage(grace, "");
    }
    openDialog("secret-dialog");
    $("secret-value").focus();
    $("secret-value").select();
  }

  function forgetSecret() {
    // Shown once: once the dialog closes, the page holds the key nowhere.
    $("secret-value").value = "";
    $("secret-name").textContent = "";
    $("secret-copied").textContent = "";
  }

  async function copySecret() {
    const field = $("secret-value");
    try {
      await navigator.clipboard.writeText(field.value);
      $("secret-copied").textContent = "Copied to the clipboard.";
    } catch (error) {
      field.focus();
      field.select();
      $("secret-copied").textContent = "Press Ctrl+C (or \u2318C) to copy the selected key.";
    }
  }

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
      if ($("create-meta").value.trim()) body.meta = parseMeta($("create-meta").value, "Metadata");
      busy(form, true);
      try {
        const answer = await api("POST", "/dashboard/api-keys", body);
        $("create-dialog").close();
        form.reset();
        state.keysPage = 1; // newest first: the new key is at the top of page 1
        announce("Created the key \u201c" + answer.data.name + "\u201d.");
        showSecret(answer.data.name, answer.data.fullKey);
        loadKeys();
      } finally {
        busy(form, false);
      }
    });
  }

  function keyFor(id) {
    const key = state.keys.get(id);
    state.current = key || null;
    return key;
  }

  function openEdit(id) {
    const key = keyFor(id);
    if (!key) return;
    $("edit-key-name").textContent = "\u201c" + key.name + "\u201d";
    $("edit-name").value = key.name;
    $("edit-expires").value = isoToLocalInput(key.expiresAt);
    $("edit-scopes").value = (key.scopes || []).join(" ");
    $("edit-meta").value = JSON.stringify(key.meta || {}, null, 2);
    // What the form showed, to send only what the user changed.
    state.editShown = {
      name: $("edit-name").value,
      expires: $("edit-expires").value,
      scopes: $("edit-scopes").value,
      meta: $("edit-meta").value,
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
      const expires = $("edit-expires").value;
      if (expires !== shown.expires) body.expiresAt = expires ? localInputToIso(expires) : null;
      if ($("edit-scopes").value !== shown.scopes) body.scopes = parseScopes($("edit-scopes").value);
      if ($("edit-meta").value !== shown.meta) body.meta = parseMeta($("edit-meta").value, "Metadata");
      if (!Object.keys(body).length) {
        $("edit-dialog").close();
        announce("Nothing changed.");
        return;
      }
      busy(form, true);
      try {
        const answer = await api("PATCH", "/dashboard/api-keys/" + encodeURIComponent(key.id), body);
        $("edit-dialog").close();
        announce("Saved \u201c" + answer.data.name + "\u201d.");
        loadKeys();
      } finally {
        busy(form, false);
      }
    });
  }

  function openRegenerate(id) {
    const key = keyFor(id);
    if (!key) return;
    $("regenerate-form").reset();
    $("regenerate-key-name").textContent = "\u201c" + key.name + "\u201d";
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
        const path = "/dashboard/api-keys/" + encodeURIComponent(key.id) + "/regenerate";
        const answer = await api("POST", path, body);
        $("regenerate-dialog").close();
        announce("Regenerated \u201c" + key.name + "\u201d.");
        showSecret(key.name, answer.data.fullKey, answer.data.previousSecretExpiresAt);
        loadKeys();
      } finally {
        busy(form, false);
      }
    });
  }

  async function toggle(id, button) {
    const key = keyFor(id);
    if (!key) return;
    button.disabled = true;
    await attempt($("keys-error"), async () => {
      const answer = await api("POST", "/dashboard/api-keys/" + encodeURIComponent(id) + "/toggle");
      announce((answer.data.active ? "Enabled" : "Disabled") + " \u201c" + key.name + "\u201d.");
      await loadKeys();
      // The row was rebuilt: keep the keyboard where it was.
      const row = document.querySelector('tr[data-key-id="' + CSS.escape(id) + '"]');
      const again = row && row.querySelector(".row-actions button:nth-child(3)");
      if (again) again.focus();
    });
    button.disabled = false;
  }

  function openDelete(id) {
    const key = keyFor(id);
    if (!key) return;
    $("delete-key-name").textContent = "\u201c" + key.name + "\u201d";
    openDialog("delete-dialog");
  }

  async function submitDelete(event) {
    event.preventDefault();
    const key = state.current;
    const form = $("delete-form");
    await attempt($("delete-error"), async () => {
      busy(form, true);
      try {
        await api("DELETE", "/dashboard/api-keys/" + encodeURIComponent(key.id));
        $("delete-dialog").close();
        announce("Deleted \u201c" + key.name + "\u201d.");
        loadKeys();
      } finally {
        busy(form, false);
      }
    });
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("signin-token").value.trim();
    if (!token) {
      setMessage($("signin-error"), "Paste a bearer token first.");
      return;
    }
    setMessage($("signin-error"), "");
    sessionStorage.setItem(TOKEN_KEY, token);
    $("signin-token").value = "";
    if (location.hash !== "#keys" && location.hash !== "#audit") history.replaceState(null, "", "#keys");
    render();
  }

  // ---------- wiring ----------

  function wire() {
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => {
      signOut("");
      announce("Signed out.");
    });
    $("new-key").addEventListener("click", openCreate);
    $("create-form").addEventListener("submit", submitCreate);
    $("edit-form").addEventListener("submit", submitEdit);
    $("regenerate-form").addEventListener("submit", submitRegenerate);
    $("delete-form").addEventListener("submit", submitDelete);
    $("secret-copy").addEventListener("click", copySecret);
    $("secret-done").addEventListener("click", () => $("secret-dialog").close());
    $("secret-dialog").addEventListener("close", forgetSecret);
    for (const button of document.querySelectorAll("dialog [data-close]")) {
      button.addEventListener("click", () => button.closest("dialog").close());
    }
    $("keys-prev").addEventListener("click", () => { state.keysPage -= 1; loadKeys(); });
    $("keys-next").addEventListener("click", () => { state.keysPage += 1; loadKeys(); });
    $("audit-prev").addEventListener("click", () => { state.auditPage -= 1; loadAudit(); });
    $("audit-next").addEventListener("click", () => { state.auditPage += 1; loadAudit(); });
    window.addEventListener("hashchange", () => {
      if (location.hash.startsWith("#token=")) takeTokenFromFragment();
      render();
    });
  }

  takeTokenFromFragment();
  wire();
  render();
})();

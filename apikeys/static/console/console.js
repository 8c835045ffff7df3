// The apikeys console: a small single-page client of the public dashboard API, in plain
// JavaScript modules with no build step. This module signs in and out and picks the page.

import { claimsOf } from "./api.js";
import { forgetToken } from "./api.js";
import { getToken } from "./api.js";
import { onRefused } from "./api.js";
import { setToken } from "./api.js";
import { clearAudit } from "./audit.js";
import { loadAudit } from "./audit.js";
import { wireAudit } from "./audit.js";
import { $ } from "./dom.js";
import { announce } from "./dom.js";
import { setMessage } from "./dom.js";
import { shortTime } from "./dom.js";
import { show } from "./dom.js";
import { clearKeys } from "./keys.js";
import { loadKeys } from "./keys.js";
import { wireKeys } from "./keys.js";

const tenantClaim = document.body.dataset.tenantClaim || "tenantId";
const VIEWS = { keys: "API keys", audit: "Audit log" };

function takeTokenFromFragment() {
  // The dev link is /console#token=<jwt>: a fragment never reaches the server (so never its
  // logs); the token moves to sessionStorage and leaves the address bar and the history entry.
  if (!location.hash.startsWith("#token=")) return;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname + location.search + "#keys");
  if (token && token.trim()) setToken(token.trim());
}

function signOut(message) {
  forgetToken();
  clearKeys();
  clearAudit();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  setMessage($("signin-error"), message);
  render();
}

function signIn(event) {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  if (!token) {
    setMessage($("signin-error"), "Paste a bearer token first.");
    return;
  }
  setMessage($("signin-error"), "");
  setToken(token);
  $("signin-token").value = "";
  if (!(location.hash.slice(1) in VIEWS)) history.replaceState(null, "", "#keys");
  render(); // the first API call tells whether the server takes the token
}

function showWho(token) {
  const claims = claimsOf(token);
  const tenant = typeof claims[tenantClaim] === "string" ? claims[tenantClaim] : "?";
  $("who").textContent = "Tenant " + tenant;
  $("who").title = typeof claims.exp === "number"
    ? "Token valid until " + shortTime(new Date(claims.exp * 1000).toISOString())
    : "";
}

function render() {
  const token = getToken();
  const view = token ? (location.hash === "#audit" ? "audit" : "keys") : "signin";
  for (const id of ["nav", "sign-out", "who"]) show($(id), Boolean(token));
  show($("signin-view"), view === "signin");
  show($("keys-view"), view === "keys");
  show($("audit-view"), view === "audit");
  for (const name of Object.keys(VIEWS)) {
    if (view === name) $("nav-" + name).setAttribute("aria-current", "page");
    else $("nav-" + name).removeAttribute("aria-current");
  }
  if (view === "signin") {
    document.title = "Sign in \u00b7 apikeys console";
    $("signin-token").value = "";
    return;
  }
  document.title = VIEWS[view] + " \u00b7 apikeys console";
  showWho(token);
  if (view === "keys") loadKeys();
  else loadAudit();
}

function wire() {
  onRefused(signOut);
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => {
    signOut("");
    announce("Signed out.");
  });
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  wireKeys();
  wireAudit();
  window.addEventListener("hashchange", () => {
    takeTokenFromFragment();
    render();
  });
}

takeTokenFromFragment();
wire();
render();

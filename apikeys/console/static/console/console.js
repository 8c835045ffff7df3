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
import { quoted } from "./dom.js";
import { setMessage } from "./dom.js";
import { shortTime } from "./dom.js";
import { show } from "./dom.js";
import { clearKeys } from "./keys.js";
import { loadKeys } from "./keys.js";
import { wireKeys } from "./keys.js";
import { clearUsage } from "./usage.js";
import { loadUsage } from "./usage.js";
import { wireUsage } from "./usage.js";

const tenantClaim = document.body.dataset.tenantClaim || "tenantId";
// Only a server started with --dev (make run) marks the page: its terminal prints a link whose
// token the person at that terminal asked for.
const devServer = "dev" in document.body.dataset;
const VIEWS = { keys: "API keys", usage: "Usage", audit: "Audit log" };
const OFFER_DIALOGS = ["switch-dialog", "link-dialog"];

let offered = null; // a token from a link, waiting for the user's yes (memory only)

function takeTokenFromFragment() {
  // The dev link is /console#token=<jwt>: a fragment never reaches the server (so never its
  // logs); the token leaves the address bar and the history entry at once, whatever happens next.
  if (!location.hash.startsWith("#token=")) return;
  const token = (new URLSearchParams(location.hash.slice(1)).get("token") || "").trim();
  history.replaceState(null, "", location.pathname + location.search + "#keys");
  if (!token) return;
  const current = getToken();
  if (token === current) return;
  // Any page can link here with its own token, and a link from another site opens a fresh tab
  // with nothing stored: the user is asked either way, or they would go on creating keys in
  // someone else's tenant. Only the link make run printed signs a fresh tab in unasked.
  if (!current && devServer) setToken(token);
  else offerToken(token);
}

function tenantOf(token) {
  const claims = claimsOf(token);
  return typeof claims[tenantClaim] === "string" ? claims[tenantClaim] : null;
}

function offerToken(token) {
  // Names who the link signs in as, never the token: "Switch tenants?" in a signed-in tab,
  // "Sign in from this link?" in a signed-out one. Either way the token stays in memory only.
  offered = token;
  const current = getToken();
  const name = current ? "switch" : "link";
  const subject = claimsOf(token).sub;
  const tenant = tenantOf(token);
  $(name + "-tenant").textContent = tenant === null ? "an unknown tenant" : "tenant " + quoted(tenant);
  $(name + "-subject").textContent = typeof subject === "string" ? " (subject " + quoted(subject) + ")" : "";
  if (current) $("switch-current").textContent = quoted(tenantOf(current) || "?");
  const dialog = $(name + "-dialog");
  if (!dialog.open) dialog.showModal();
  $(current ? "switch-stay" : "link-decline").focus(); // the safe answer is the default
}

function acceptOffer() {
  const token = offered;
  offered = null;
  for (const id of OFFER_DIALOGS) $(id).close();
  if (!token) return;
  setMessage($("signin-error"), "");
  clearKeys();
  clearAudit();
  clearUsage();
  setToken(token);
  history.replaceState(null, "", location.pathname + location.search + "#keys");
  render();
  announce("Signed in as tenant " + quoted(tenantOf(token) || "?") + ".");
}

function signOut(message) {
  forgetToken();
  clearKeys();
  clearAudit();
  clearUsage();
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
  $("who").textContent = "Tenant " + (tenantOf(token) || "?");
  $("who").title = typeof claims.exp === "number"
    ? "Token valid until " + shortTime(new Date(claims.exp * 1000).toISOString())
    : "";
}

function render() {
  const token = getToken();
  const named = location.hash.slice(1);
  const view = token ? (named === "audit" || named === "usage" ? named : "keys") : "signin";
  for (const id of ["nav", "sign-out", "who"]) show($(id), Boolean(token));
  show($("signin-view"), view === "signin");
  show($("keys-view"), view === "keys");
  show($("usage-view"), view === "usage");
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
  else if (view === "usage") loadUsage();
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
  $("switch-accept").addEventListener("click", acceptOffer);
  $("link-accept").addEventListener("click", acceptOffer);
  for (const id of OFFER_DIALOGS) {
    $(id).addEventListener("close", () => {
      // Declined (Stay, Don't sign in, Escape, sign-out): the offered token is dropped. The event
      // comes a task later, so a link opened meanwhile may have opened a dialog with its own offer.
      if (!OFFER_DIALOGS.some((other) => $(other).open)) offered = null;
    });
  }
  wireKeys();
  wireAudit();
  wireUsage();
  window.addEventListener("hashchange", () => {
    takeTokenFromFragment();
    render();
  });
}

wire();
takeTokenFromFragment();
render();

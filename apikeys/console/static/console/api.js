// The bearer token and the calls to the dashboard API.
//
// The token lives in this tab's sessionStorage only: never a cookie, a URL or a log.
// Requests carry it in the Authorization header and carry no cookies.

import { InputError } from "./dom.js";
import { setMessage } from "./dom.js";

const TOKEN_KEY = "apikeys.console.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function claimsOf(token) {
  // For display only (tenant, expiry): the server is the one that checks the token.
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : {};
  } catch (error) {
    return {};
  }
}

export class ApiError extends Error {
  constructor(status, message, errors) {
    super(message);
    this.status = status;
    this.errors = errors || null;
  }
}

// The server refused the token; the console has gone back to the sign-in page.
export class SignedOut extends Error {}

let refused = () => {};

export function onRefused(callback) {
  refused = callback;
}

export async function api(method, path, body) {
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
    refused("The server refused the token: " + (message || "it is not valid.") + " Sign in again.");
    throw new SignedOut(message || "Signed out.");
  }
  if (!response.ok) {
    const fallback = "The request failed (HTTP " + response.status + ").";
    throw new ApiError(response.status, message || fallback, payload && payload.errors);
  }
  return payload;
}

function fieldLines(errors, prefix) {
  // {"scopes": [...]} is "scopes: ..."; a nested object's own fields ({"rateLimit": {"limit": [...]}})
  // are "rateLimit.limit: ...", so a message never shows as raw JSON.
  const lines = [];
  for (const [field, problems] of Object.entries(errors)) {
    const name = prefix + field;
    if (Array.isArray(problems)) lines.push(name + ": " + problems.join(" "));
    else if (problems && typeof problems === "object") lines.push(...fieldLines(problems, name + "."));
    else lines.push(name + ": " + String(problems));
  }
  return lines;
}

function describe(error) {
  // The envelope's message, then the field errors of a 400, one a line ("scopes: ...").
  const lines = [error.message];
  if (error.errors && typeof error.errors === "object") lines.push(...fieldLines(error.errors, ""));
  return lines.join("\n");
}

export async function attempt(errorNode, action) {
  // Run an action and show what went wrong in errorNode; a refused token has already
  // sent the user to the sign-in page, so there is nothing to show here.
  setMessage(errorNode, "");
  try {
    await action();
  } catch (error) {
    if (error instanceof SignedOut) return;
    if (error instanceof ApiError || error instanceof InputError) setMessage(errorNode, describe(error));
    else setMessage(errorNode, "Something went wrong: " + error.message);
    // A long dialog (the limits make it taller than a phone) is scrolled to its button: bring
    // the message, at the top, into view.
    errorNode.scrollIntoView({ block: "nearest" });
  }
}

// Sign-in, navigation between the pages (hash routes) and the live event feed they share.
import { ApiError, EventFeed, api, clearToken, setToken, token } from "./api.js";
import { el, errorBox, replace } from "./dom.js";
import { agentPage } from "./agent.js";
import { fleetPage } from "./fleet.js";
import { livePage } from "./live.js";
import { migrationsPage } from "./migrations.js";

const MAX_EVENTS = 500;
const REFRESH_KINDS = /^(verdict\.|agent\.|migration\.|enrollment\.)/;

/** What every page can read: the events received since sign-in (newest last) and the feed state. */
export const shared = { events: [], feedState: "off", listeners: new Set() };

let feed = null;
let current = null; // {refresh(), stop?()} of the page shown
let refreshTimer = null;

const main = () => document.getElementById("main");

function showSignedIn(yes) {
  document.getElementById("nav").hidden = !yes;
  document.getElementById("sign-out").hidden = !yes;
  document.getElementById("feed-state").hidden = !yes;
}

function setFeedState(state) {
  shared.feedState = state;
  const badge = document.getElementById("feed-state");
  badge.textContent = `events: ${state}`;
  badge.dataset.state = state;
  for (const listener of shared.listeners) listener({ kind: "feed.state", state });
  if (state === "refused") signOut("The server refused the token for the event stream.");
}

function onEvent(event) {
  shared.events.push({ ...event, received_at: new Date().toISOString() });
  if (shared.events.length > MAX_EVENTS) shared.events.splice(0, shared.events.length - MAX_EVENTS);
  for (const listener of shared.listeners) listener(event);
  if (current && REFRESH_KINDS.test(event.kind ?? "")) scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => current?.refresh(), 250);
}

function signInForm(message) {
  showSignedIn(false);
  const input = el("input", { id: "token", type: "password", name: "token", autocomplete: "off", required: true,
                              placeholder: "operator token", "aria-label": "operator token" });
  const status = el("div", { id: "sign-in-status" }, message ? errorBox(message) : null);
  const form = el("form", { id: "sign-in", class: "card narrow" },
    el("h1", {}, "Sign in"),
    el("p", {}, "The operator token that ", el("code", {}, "vroot server init"), " printed. It stays in this tab ",
       "(sessionStorage) and goes only into each request's Authorization header."),
    input, el("button", { type: "submit" }, "Sign in"), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    input.value = "";
    replace(status, el("p", { class: "muted" }, "Checking…"));
    setToken(value);
    try {
      await api("/v1/status");
    } catch (err) {
      clearToken();
      replace(status, errorBox(explain(err)));
      return;
    }
    startSession();
  });
  replace(main(), form);
  input.focus();
}

function explain(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    return `Wrong token: the server refused it (${err.status} ${err.title}). Nothing is shown without a valid operator token.`;
  }
  return `Could not sign in: ${err.message}`;
}

function signOut(message) {
  feed?.stop();
  feed = null;
  current?.stop?.();
  current = null;
  clearToken();
  shared.events.length = 0;
  signInForm(message);
}

function startSession() {
  showSignedIn(true);
  feed?.stop();
  feed = new EventFeed({ onEvent, onState: setFeedState });
  feed.run();
  route();
}

function route() {
  if (!token()) {
    signInForm();
    return;
  }
  current?.stop?.();
  const hash = location.hash || "#/fleet";
  const [, page, arg] = hash.match(/^#\/([a-z]+)(?:\/(.*))?$/) ?? [null, "fleet", null];
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === page);
  }
  const target = main();
  const onAuthError = (err) => {
    if (err instanceof ApiError && err.status === 401) signOut(explain(err));
  };
  const context = { target, shared, onAuthError };
  if (page === "agent" && arg) current = agentPage(context, decodeURIComponent(arg));
  else if (page === "migrations") current = migrationsPage(context);
  else if (page === "live") current = livePage(context);
  else current = fleetPage(context);
  current.refresh();
}

window.addEventListener("hashchange", () => route());
window.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  if (!token()) {
    signInForm();
    return;
  }
  try {
    await api("/v1/status");
    startSession();
  } catch (err) {
    clearToken();
    signInForm(explain(err));
  }
});

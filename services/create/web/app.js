// Kurz's web page: shorten a link, sign in with an API key, list, edit and delete links, and
// read a link's stats. Plain DOM and fetch, no framework and no build step.
//
// The page runs under a strict Content-Security-Policy, so nothing here writes HTML: every node
// is built with createElement and every text from the API goes in through textContent. Visibility
// is the `hidden` attribute and looks are classes; no inline style is ever set.

const KEY_STORAGE = "kurz.apiKey";
const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 300;
const NETWORK_MESSAGE = "Kurz cannot be reached; check your connection and try again.";
const NEED_KEY_MESSAGE = "This Kurz makes links only for signed-in users.";

// ---------------------------------------------------------------------------------------------
// DOM helpers

const $ = (id) => document.getElementById(id);

// The HTML parser gave the chart its SVG namespace; reading it back keeps the namespace URI
// (which looks like an external address) out of this file.
const SVG_NS = $("stats-chart").namespaceURI;

/** An HTML element with attributes ("text" sets textContent) and children (nodes or strings). */
function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG elements. */
function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function setState(section, state) {
  section.dataset.state = state;
}

function setBusy(button, busy) {
  button.disabled = busy;
  const form = button.form;
  if (form) form.setAttribute("aria-busy", String(busy));
}

/** Shows a message (and optionally a link to the sign-in view) in an error element. */
function showMessage(element, message, { signIn = false } = {}) {
  element.replaceChildren(message);
  if (signIn) element.append(" ", h("a", { href: "#/key", text: "Sign in with an API key" }), ".");
  element.hidden = false;
}

function hideMessage(element) {
  element.replaceChildren();
  element.hidden = true;
}

/** Puts text in a live region so that it is read even when it repeats the previous text. */
function announce(element, text) {
  if (element.textContent !== text) {
    element.textContent = text;
    return;
  }
  element.textContent = "";
  setTimeout(() => {
    element.textContent = text;
  }, 50);
}

/** Where focus went when the focused control was disabled or removed. */
function focusWasLost() {
  const active = document.activeElement;
  return !active || active === document.body;
}

// ---------------------------------------------------------------------------------------------
// Configuration and the stored key

// The server writes `true` or `false` here; anything else (the file served as is) means false.
const config = {
  anonymousCreate:
    document.querySelector('meta[name="kurz-anonymous-create"]')?.content.trim().toLowerCase() === "true",
};

const auth = { key: readStoredKey(), persisted: true };

function readStoredKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || null;
  } catch {
    return null; // storage disabled: nobody is signed in until the user signs in
  }
}

/** Stores the key; false when the browser refuses (the key then lives only in this page). */
function writeStoredKey(key) {
  try {
    localStorage.setItem(KEY_STORAGE, key);
    return true;
  } catch {
    return false;
  }
}

function removeStoredKey() {
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    // nothing was stored
  }
}

/** What the page shows of a key: its prefix and last four characters, never the rest. */
function keyHint(key) {
  return `kurz_…${key.slice(-4)}`;
}

// ---------------------------------------------------------------------------------------------
// Error codes
//
// Every code the API has (README, "Validation rules and error codes"), with the field of a
// link form it belongs to and a message for a person. The API's own message is appended only
// where it carries a detail the person needs (`detail`); `retry` adds "try again in N s" from
// Retry-After; `signIn` adds a link to the sign-in view when shown at form level.

const ERRORS = {
  // The request itself
  "invalid_json": { message: "Kurz could not read what this page sent. Reload the page and try again." },
  "unsupported_media_type": { message: "Kurz could not read what this page sent. Reload the page and try again." },
  "payload_too_large": { message: "That is more than Kurz accepts in one request: the URL is far too long." },
  "invalid_body": { message: "Kurz did not accept these values.", detail: true },

  // url
  "url_too_long": { field: "url", message: "This URL is too long: Kurz accepts up to 8,192 bytes." },
  "url_invalid_characters": {
    field: "url",
    message: "This URL contains control, invisible or unusual space characters. Remove them or type it again.",
  },
  "invalid_url": {
    field: "url",
    message: "This is not a complete web address. Include the scheme and the host, starting with http or https.",
  },
  "url_missing_host": { field: "url", message: "This URL has no host name: add the site's address after the scheme." },
  "unsupported_scheme": { field: "url", message: "Only web links can be shortened: the URL must start with http or https." },
  "url_has_credentials": { field: "url", message: "This URL contains a user name or password. Remove them first." },
  "url_self_reference": { field: "url", message: "This URL already points at this shortener, so its short link would loop." },
  "url_private_target": {
    field: "url",
    message: "This URL points at a private or local address (such as localhost) that people elsewhere cannot reach.",
  },
  "url_blocked": {
    field: "url",
    message: "Links to this domain are not allowed here: it is on the blocklist (another link shortener, for example).",
  },

  // expires_at, max_visits, alias
  "invalid_expires_at": { field: "expires_at", message: "Enter a valid date and time for the expiry." },
  "expires_at_in_past": { field: "expires_at", message: "The expiry must be in the future." },
  "invalid_max_visits": {
    field: "max_visits",
    message: "The visit limit must be a whole number from 1 to 1,000,000,000,000.",
  },
  "invalid_alias": { field: "alias", message: "An alias is 3 to 64 characters: letters, digits, _ and -." },
  "alias_reserved": { field: "alias", message: "This alias is reserved for Kurz's own pages. Choose another." },
  "alias_taken": { field: "alias", message: "This alias is already taken. Choose another." },

  // Other link settings (not on this page's forms, but the API has them)
  "invalid_redirect_status": { message: "The redirect status must be 301, 302, 307 or 308." },
  "invalid_expired_url": { message: "The address for visitors of an expired link is not usable.", detail: true },

  // Keys, scopes and limits
  "unauthorized": { message: "Sign in with an API key to do this.", signIn: true },
  "invalid_api_key": {
    message: "This API key is not accepted: it is unknown, revoked, expired or mistyped.",
    signIn: true,
  },
  "insufficient_scope": { message: "This key is not allowed to do this.", detail: true },
  "account_disabled": { message: "The account of this API key is disabled. Ask your Kurz operator." },
  "rate_limited": { message: "Too many requests for now.", retry: true },

  // Accounts and keys (admin)
  "account_name_taken": { message: "An account with this name already exists." },
  "invalid_name": { message: "A name is 1 to 100 characters, without control characters." },
  "invalid_scopes": { message: "The scopes must be some of links:read, links:write, stats:read and admin." },
  "invalid_rate_limit": { message: "The rate limit must be from 1 to 1,000,000 requests a minute." },

  // Listing, search and stats
  "search_too_broad": { message: "This reads too much at once. Use a longer search term or a shorter range." },
  "invalid_query": { message: "Kurz did not accept this request's parameters.", detail: true },
  "invalid_range": { message: "The start of the range must be before its end." },
  "too_many_buckets": { message: "This range has too many points to chart. Choose a shorter one." },
  "invalid_timezone": { message: "Kurz does not know this browser's time zone." },
  "invalid_cursor": { message: "The list cannot be continued from here. Filter again to start over." },

  // Retries and bulk creation
  "invalid_idempotency_key": { message: "This page sent an unusable retry key. Reload the page and try again." },
  "idempotency_key_reused": { message: "This submission was already used for another link. Submit the form again." },
  "no_items": { message: "There was nothing to create." },
  "too_many_items": { message: "Too many links at once.", detail: true },

  // Everything else
  "not_found": { message: "No link of yours has this code." },
  "method_not_allowed": { message: "Kurz does not allow this action here." },
  "key_pool_empty": { message: "Kurz has no fresh short codes for a moment.", retry: true },
  "unavailable": { message: "Kurz is briefly unavailable.", retry: true },
  "internal_error": {
    message: "Something went wrong inside Kurz. Try again; if it keeps happening, tell your Kurz operator.",
  },
};

// What the list and the stats view say instead, where they know better what was refused.
const LIST_ERRORS = {
  "insufficient_scope": { message: "This key may not list links (it needs the links:read scope).", detail: false },
};
const STATS_ERRORS = {
  "insufficient_scope": { message: "This key may not read stats (it needs the stats:read scope).", detail: false },
  "not_found": { message: "No link of yours has this code." },
};

// A body without an error code (a proxy in between, say) still gets a readable message.
const CODES_BY_STATUS = {
  401: "unauthorized",
  404: "not_found",
  405: "method_not_allowed",
  413: "payload_too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  500: "internal_error",
  502: "unavailable",
  503: "unavailable",
  504: "unavailable",
};

class ApiError extends Error {
  constructor({ status = 0, code = null, apiMessage = "", retryAfter = null, network = false } = {}) {
    super(apiMessage || code || (network ? "network failure" : `HTTP ${status}`));
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.apiMessage = apiMessage;
    this.retryAfter = retryAfter;
    this.network = network;
  }
}

/** { field?, message, signIn? } for an error, with `overrides` for the calling view. */
function describeError(error, overrides = {}) {
  if (!(error instanceof ApiError)) {
    return { message: "Something went wrong on this page. Reload it and try again." };
  }
  if (error.network) return { message: NETWORK_MESSAGE };
  const known = ERRORS[error.code];
  if (!known) {
    return { message: error.apiMessage || `Kurz answered with an error (HTTP ${error.status}).` };
  }
  const entry = { ...known, ...overrides[error.code] };
  let message = entry.message;
  if (entry.detail && error.apiMessage) message += ` Kurz says: ${sentence(error.apiMessage)}`;
  if (entry.retry) {
    message += error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again in a moment.";
  }
  return { field: entry.field, message, signIn: Boolean(entry.signIn) };
}

function sentence(text) {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

// ---------------------------------------------------------------------------------------------
// The API client

/**
 * Calls the API at a relative path. `key` defaults to the signed-in key; null sends no
 * Authorization header at all (anonymous). Resolves to the parsed body (null for 204);
 * rejects with an ApiError, or with the AbortError of an aborted call.
 */
async function api(
  path,
  { method = "GET", body, key = auth.key, idempotencyKey, as = "json", signal, cache = "no-store" } = {},
) {
  const headers = new Headers({ Accept: ACCEPT[as] });
  if (key) {
    try {
      headers.set("Authorization", `Bearer ${key}`);
    } catch {
      // A pasted key with characters no header can carry is no key Kurz ever made.
      throw new ApiError({ status: 401, code: "invalid_api_key" });
    }
  }
  const init = { method, headers, signal, cache };
  if (body !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  if (idempotencyKey) headers.set("Idempotency-Key", idempotencyKey);

  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError({ network: true });
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  try {
    if (as === "text") return await response.text();
    if (as === "blob") return await response.blob();
    return await response.json();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError({ network: true }); // the body was cut off on the way
  }
}

const ACCEPT = { json: "application/json", text: "image/svg+xml", blob: "image/png" };

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back on the status
  }
  return new ApiError({
    status: response.status,
    code: body?.error?.code ?? CODES_BY_STATUS[response.status] ?? null,
    apiMessage: typeof body?.error?.message === "string" ? body.error.message : "",
    retryAfter: retryAfterSeconds(response.headers.get("Retry-After")),
  });
}

/** Retry-After as whole seconds (it may be a delay or an HTTP date), or null. */
function retryAfterSeconds(value) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Math.max(1, Number(value));
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

const linkPath = (code) => `/api/v1/links/${encodeURIComponent(code)}`;
const qrPath = (code, params) => `${linkPath(code)}/qr?${new URLSearchParams(params)}`;

/** A fresh Idempotency-Key. randomUUID exists only in secure contexts; getRandomValues everywhere. */
function newIdempotencyKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------
// Formatting and reading inputs

const formatCount = (n) => (Number(n) || 0).toLocaleString("en-US");
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function formatDateTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateTimeFormat.format(date);
}

/** A Date as a datetime-local value, in local time, to the minute. */
function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

/**
 * A datetime-local input's value: { empty }, { invalid } or { date }. The input says "" both
 * when empty and when half filled in; badInput tells the two apart, so a half-typed expiry is
 * never silently dropped.
 */
function readDateTime(input) {
  if (input.validity.badInput) return { invalid: true };
  if (input.value === "") return { empty: true };
  const date = new Date(input.value); // no offset in the value: the browser reads it as local time
  return Number.isNaN(date.getTime()) ? { invalid: true } : { date };
}

/** A number input's value: { empty }, { invalid } or { value }. The API judges the number. */
function readNumber(input) {
  if (input.validity.badInput) return { invalid: true };
  if (input.value.trim() === "") return { empty: true };
  return { value: Number(input.value) };
}

// ---------------------------------------------------------------------------------------------
// Form errors

/**
 * The errors of one form. `fields` maps the API's field names to input ids; each input's
 * error element is `${id}-error`. Errors of no field go to `formErrorId` (or, for a form
 * without one, to its first field).
 */
class FormErrors {
  constructor(fields, formErrorId = null) {
    this.fields = Object.entries(fields).map(([name, id]) => {
      const input = $(id);
      return { name, input, error: $(`${id}-error`), help: input.getAttribute("aria-describedby") };
    });
    this.formError = formErrorId ? $(formErrorId) : null;
  }

  clear() {
    for (const { input, error, help } of this.fields) {
      error.replaceChildren();
      error.hidden = true;
      input.removeAttribute("aria-invalid");
      if (help) input.setAttribute("aria-describedby", help);
      else input.removeAttribute("aria-describedby");
    }
    if (this.formError) hideMessage(this.formError);
  }

  /** Shows an error beside a field; false when the form has no such field. */
  field(name, message) {
    const field = this.fields.find((f) => f.name === name);
    if (!field) return false;
    field.error.textContent = message;
    field.error.hidden = false;
    field.input.setAttribute("aria-invalid", "true");
    // While an error shows it is the field's one description: the messages restate the rule
    // the help text gives.
    field.input.setAttribute("aria-describedby", field.error.id);
    return true;
  }

  form(message, options) {
    if (this.formError) showMessage(this.formError, message, options);
    else this.field(this.fields[0].name, message);
  }

  apiError(error, overrides) {
    const { field, message, signIn } = describeError(error, overrides);
    if (!(field && this.field(field, message))) this.form(message, { signIn });
  }

  /** Focuses the first field showing an error, in the form's order; false when there is none. */
  focusFirstInvalid() {
    const field = this.fields.find((f) => f.input.getAttribute("aria-invalid") === "true");
    field?.input.focus();
    return Boolean(field);
  }
}

// ---------------------------------------------------------------------------------------------
// Copying and QR codes

/** Copies text; the Clipboard API first, then a selected readonly input for older contexts. */
async function copyText(text) {
  try {
    // navigator.clipboard is missing outside secure contexts: the TypeError lands below too.
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return copyWithSelection(text);
  }
}

function copyWithSelection(text) {
  const previous = document.activeElement;
  const buffer = h("input", { type: "text", readonly: true, class: "copy-buffer", tabindex: "-1", "aria-hidden": "true" });
  buffer.value = text;
  // While a modal dialog is open the rest of the page is inert, so stay where the focus is.
  (previous?.closest?.("dialog[open]") ?? document.body).append(buffer);
  buffer.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  buffer.remove();
  if (previous instanceof HTMLElement) previous.focus({ preventScroll: true });
  return copied;
}

/**
 * Turns the server's QR SVG into a node. The SVG is our own API's, but it is parsed as XML (never
 * as HTML) and stripped of anything that could run or that the CSP would refuse.
 */
function svgFromText(text, label) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (root.localName !== "svg" || doc.getElementsByTagName("parsererror").length > 0) {
    throw new Error("the QR code is not an SVG image");
  }
  for (const node of root.querySelectorAll("script, foreignObject")) node.remove();
  for (const node of [root, ...root.querySelectorAll("*")]) {
    for (const { name } of [...node.attributes]) {
      if (name === "style" || name.toLowerCase().startsWith("on")) node.removeAttribute(name);
    }
  }
  const svg = document.importNode(root, true);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  return svg;
}

/** Fetches a link's QR code as SVG into `container`; says what failed in `status`. */
async function loadQr(container, link, status) {
  container.replaceChildren();
  container.setAttribute("aria-busy", "true");
  status.textContent = "";
  try {
    // Cacheable (the server sends a strong ETag), unlike the JSON calls.
    const text = await api(qrPath(link.code, { format: "svg" }), { as: "text", cache: "default" });
    container.replaceChildren(svgFromText(text, `QR code for ${link.short_url}`));
  } catch (error) {
    status.textContent = `The QR code is not available. ${describeError(error).message}`;
  } finally {
    container.removeAttribute("aria-busy");
  }
}

/** Downloads a link's QR code as a 1024-pixel PNG named CODE.png. */
async function downloadQrPng(code, button, status) {
  button.disabled = true;
  status.textContent = "Preparing the PNG…";
  try {
    const blob = await api(qrPath(code, { format: "png", size: 1024 }), { as: "blob", cache: "default" });
    const url = URL.createObjectURL(blob);
    const anchor = h("a", { href: url, download: `${code}.png`, hidden: true });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    // Revoking at once can cancel the download before it starts; a minute is plenty.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    status.textContent = `Downloaded ${code}.png`;
  } catch (error) {
    status.textContent = `The PNG could not be downloaded. ${describeError(error).message}`;
  } finally {
    button.disabled = false;
    if (focusWasLost()) button.focus();
  }
}

// ---------------------------------------------------------------------------------------------
// Header: who is signed in

const nav = { shorten: $("nav-shorten"), links: $("nav-links"), key: $("nav-key") };

function renderAuth() {
  const signedIn = Boolean(auth.key);
  $("whoami").textContent = signedIn ? "Signed in" : "Not signed in";
  nav.key.textContent = signedIn ? "Your key" : "Sign in";
  $("forget-key").hidden = !signedIn;
  $("shorten-needs-key").hidden = signedIn || config.anonymousCreate;
}

/** Drops everything read with the previous key, so another key never sees it. */
function forgetCachedData() {
  resetLinks();
  resetStats(null);
  result.link = null;
  $("result").hidden = true;
  $("result-qr").replaceChildren();
}

// ---------------------------------------------------------------------------------------------
// Routing: #/ (shorten), #/key, #/links, #/links/{code}/stats

const views = {
  shorten: { section: $("view-shorten"), heading: $("shorten-title"), nav: nav.shorten, title: () => "Shorten a link", enter: enterShorten },
  key: { section: $("view-key"), heading: $("key-title"), nav: nav.key, title: () => "Sign in", enter: enterKey },
  links: { section: $("view-links"), heading: $("links-title"), nav: nav.links, title: () => "My links", enter: enterLinks },
  // A link's stats belong to My links, so that item stays marked in the header.
  stats: { section: $("view-stats"), heading: $("stats-title"), nav: nav.links, title: (r) => `Stats for ${r.code}`, enter: enterStats },
};

let currentRoute = null;

/** The route of a hash; null for an in-page anchor (such as #main), which changes no view. */
function parseRoute(hash) {
  const path = hash.startsWith("#") ? hash.slice(1) : hash;
  if (path === "" || path === "/") return { view: "shorten" };
  if (!path.startsWith("/")) return null;
  if (path === "/key") return { view: "key" };
  if (path === "/links") return { view: "links" };
  const match = /^\/links\/([^/]+)\/stats\/?$/.exec(path);
  if (match) {
    try {
      return { view: "stats", code: decodeURIComponent(match[1]) };
    } catch {
      // a malformed escape: not a code
    }
  }
  return { view: "shorten" };
}

function showRoute({ focus }) {
  syncKeyFromStorage();
  const route = parseRoute(location.hash) ?? currentRoute ?? { view: "shorten" };
  currentRoute = route;
  const view = views[route.view];
  for (const [name, other] of Object.entries(views)) other.section.hidden = name !== route.view;
  for (const link of Object.values(nav)) link.removeAttribute("aria-current");
  view.nav.setAttribute("aria-current", "page");
  document.title = `${view.title(route)} · Kurz`;
  view.enter(route);
  // Screen readers learn of the new view from its heading.
  if (focus) view.heading.focus();
}

// ---------------------------------------------------------------------------------------------
// Shorten

const shortenForm = $("shorten-form");
const shortenInputs = {
  url: $("url"),
  alias: $("alias"),
  expires_at: $("expires_at"),
  max_visits: $("max_visits"),
};
const shortenErrors = new FormErrors(
  { url: "url", alias: "alias", expires_at: "expires_at", max_visits: "max_visits" },
  "form-error",
);

// `pending` is the submission whose answer may not have arrived: a retry of the same body with
// the same key reuses its Idempotency-Key, so a 201 lost on the way never makes a second link.
const shorten = { busy: false, pending: null };
const result = { link: null };

function enterShorten() {
  setState(views.shorten.section, "ready");
  renderAuth();
}

/** The body to send, or null after showing why there is none. */
function shortenBody() {
  const { url, alias, expires_at: expires, max_visits: maxVisits } = shortenInputs;
  const body = {};
  if (url.value.trim() === "") shortenErrors.field("url", "Enter the long URL to shorten.");
  else body.url = url.value;

  if (alias.value.trim() !== "") body.alias = alias.value.trim();

  const expiry = readDateTime(expires);
  if (expiry.invalid) shortenErrors.field("expires_at", "Enter a complete date and time, or leave the field empty.");
  else if (expiry.date) body.expires_at = expiry.date.toISOString();

  const limit = readNumber(maxVisits);
  if (limit.invalid) shortenErrors.field("max_visits", ERRORS["invalid_max_visits"].message);
  else if (!limit.empty) body.max_visits = limit.value;

  return shortenErrors.focusFirstInvalid() ? null : body;
}

async function onShortenSubmit(event) {
  event.preventDefault();
  if (shorten.busy) return;
  shortenErrors.clear();
  // Without a key nothing can succeed here, whatever the fields say: say that first.
  if (!auth.key && !config.anonymousCreate) {
    shortenErrors.form(NEED_KEY_MESSAGE, { signIn: true });
    return;
  }
  const body = shortenBody();
  if (!body) return;

  const fingerprint = `${auth.key ?? ""}\n${JSON.stringify(body)}`;
  if (shorten.pending?.fingerprint !== fingerprint) {
    shorten.pending = { fingerprint, key: newIdempotencyKey() };
  }

  const submit = $("shorten-submit");
  shorten.busy = true;
  setBusy(submit, true);
  try {
    const link = await api("/api/v1/links", {
      method: "POST",
      body,
      idempotencyKey: shorten.pending.key,
    });
    shorten.pending = null;
    shortenForm.reset();
    showResult(link);
  } catch (error) {
    if (error instanceof ApiError && error.code === "idempotency_key_reused") shorten.pending = null;
    shortenErrors.apiError(error);
    shortenErrors.focusFirstInvalid();
  } finally {
    shorten.busy = false;
    setBusy(submit, false);
    // The disabled button lost the focus; give it back so Tab goes on to the result.
    if (focusWasLost()) submit.focus();
  }
}

function showResult(link) {
  result.link = link;
  const short = $("result-short-url");
  short.href = link.short_url;
  short.textContent = link.short_url;
  $("result-target").textContent = link.url;
  $("result-copy-status").textContent = "";
  $("result").hidden = false;
  loadQr($("result-qr"), link, $("result-qr-status"));
}

async function onResultCopy() {
  if (!result.link) return;
  const copied = await copyText(result.link.short_url);
  announce($("result-copy-status"), copied ? "Copied" : "Could not copy: select the link and copy it yourself.");
}

function onResultDownload() {
  if (result.link) downloadQrPng(result.link.code, $("result-qr-download"), $("result-qr-status"));
}

// ---------------------------------------------------------------------------------------------
// Sign in

const keyInput = $("api-key");
const keyErrors = new FormErrors({ key: "api-key" });

function enterKey() {
  setState(views.key.section, "ready");
  renderAuth();
}

function renderKeyStatus() {
  if (auth.key) $("key-status").textContent = `Signed in with key ${keyHint(auth.key)}`;
  $("key-next").hidden = !auth.key;
}

async function onKeySubmit(event) {
  event.preventDefault();
  keyErrors.clear();
  // Pasted keys often carry a space or a line break at either end.
  const key = keyInput.value.trim();
  if (key === "") {
    keyErrors.field("key", "Enter your API key.");
    keyInput.focus();
    return;
  }
  const submit = $("key-submit");
  setBusy(submit, true);
  try {
    let note = "";
    try {
      await api("/api/v1/links?limit=1", { key });
    } catch (error) {
      // A key that may not list links (one that may only create them, say) is still a key.
      if (!(error instanceof ApiError && error.code === "insufficient_scope")) throw error;
      note = "This key may not list links, so My links will stay empty for it.";
    }
    signIn(key, note);
  } catch (error) {
    keyErrors.apiError(error);
    keyInput.focus();
  } finally {
    setBusy(submit, false);
    if (focusWasLost()) submit.focus();
  }
}

function signIn(key, note) {
  const kept = writeStoredKey(key);
  forgetCachedData();
  auth.key = key;
  auth.persisted = kept;
  keyInput.value = "";
  renderAuth();
  renderKeyStatus();
  const notes = [note, kept ? "" : "This browser does not let Kurz keep the key: it is forgotten when this page closes."];
  const keyNote = $("key-note");
  keyNote.textContent = notes.filter(Boolean).join(" ");
  keyNote.hidden = keyNote.textContent === "";
}

function signOut() {
  removeStoredKey();
  auth.key = null;
  auth.persisted = true;
  forgetCachedData();
  keyErrors.clear();
  renderAuth();
  renderKeyStatus();
  $("key-status").textContent = "Signed out: this browser no longer keeps the key.";
  $("key-note").hidden = true;
  // The button just pressed is hidden now.
  keyInput.focus();
}

/**
 * Follows the stored key when it changed behind the page's back (another tab signed in or out,
 * or the site's data was cleared), rather than act with a key the user dropped. True when it
 * changed. A key the browser refused to store lives in memory only, and is kept.
 */
function syncKeyFromStorage() {
  if (!auth.persisted) return false;
  const key = readStoredKey();
  if (key === auth.key) return false;
  auth.key = key;
  forgetCachedData();
  renderAuth();
  renderKeyStatus();
  if (!key) $("key-status").textContent = "Signed out: this browser no longer keeps the key.";
  return true;
}

// The storage event reaches other tabs only; route changes in this one check too (showRoute).
function onStorage(event) {
  if (event.key !== KEY_STORAGE && event.key !== null) return;
  if (syncKeyFromStorage()) showRoute({ focus: false });
}

// ---------------------------------------------------------------------------------------------
// My links: the list

const linksView = $("view-links");
const linksList = $("links-list");
const linksSearch = $("links-search");
const linksStatus = $("links-status");
const linksMore = $("links-more");
const linksMessage = $("links-message");
const linksError = $("links-error");

// `seq` numbers the loads so that an answer to an older filter never overwrites a newer one.
const links = { items: new Map(), cursor: null, seq: 0, controller: null, searchTimer: 0 };

function resetLinks() {
  links.controller?.abort();
  links.seq += 1;
  links.items.clear();
  links.cursor = null;
  linksList.replaceChildren();
  linksMore.hidden = true;
  $("links-empty").hidden = true;
  $("links-loading").hidden = true;
  linksMessage.textContent = "";
  hideMessage(linksError);
  setState(linksView, "loading");
}

function enterLinks() {
  const signedIn = Boolean(auth.key);
  $("links-signin").hidden = signedIn;
  $("links-body").hidden = !signedIn;
  if (!signedIn) {
    setState(linksView, "ready");
    return;
  }
  loadLinks({ append: false });
}

function listPath(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), status: linksStatus.value });
  const q = linksSearch.value.trim();
  if (q !== "") params.set("q", q.slice(0, 200)); // the API takes 1 to 200 characters
  if (cursor) params.set("cursor", cursor);
  return `/api/v1/links?${params}`;
}

async function loadLinks({ append }) {
  if (!auth.key) return;
  clearTimeout(links.searchTimer);
  links.controller?.abort();
  const controller = new AbortController();
  links.controller = controller;
  const seq = ++links.seq;
  const firstNew = linksList.children.length;

  setState(linksView, "loading");
  hideMessage(linksError);
  $("links-loading").hidden = false;
  linksMore.disabled = true;
  try {
    const page = await api(listPath(append ? links.cursor : null), { signal: controller.signal });
    if (seq !== links.seq) return;
    if (!append) {
      links.items.clear();
      linksList.replaceChildren();
    }
    for (const link of page.data ?? []) {
      if (links.items.has(link.code)) continue; // a page boundary never repeats, but be safe
      links.items.set(link.code, link);
      linksList.append(renderLinkItem(link));
    }
    links.cursor = page.next_cursor ?? null;
    renderListFooter();
    setState(linksView, "ready");
    if (append && linksMore.hidden) {
      // "Load more" is gone with the last page: go on at the first new link.
      linksList.children[firstNew]?.querySelector(".link-short")?.focus();
    }
  } catch (error) {
    if (error.name === "AbortError" || seq !== links.seq) return;
    const { message, signIn } = describeError(error, LIST_ERRORS);
    showMessage(linksError, message, { signIn });
    if (!append) {
      // What is shown no longer matches the filter.
      links.items.clear();
      links.cursor = null;
      linksList.replaceChildren();
      linksMore.hidden = true;
      $("links-empty").hidden = true;
    }
    setState(linksView, "error");
  } finally {
    if (seq === links.seq) {
      $("links-loading").hidden = true;
      linksMore.disabled = false;
    }
  }
}

function renderListFooter() {
  linksMore.hidden = !links.cursor;
  const empty = $("links-empty");
  empty.hidden = links.items.size > 0;
  if (!empty.hidden) {
    const filtered = linksSearch.value.trim() !== "" || linksStatus.value !== "all";
    if (filtered) empty.replaceChildren("No links match this filter.");
    else empty.replaceChildren("You have no links yet. ", h("a", { href: "#/", text: "Shorten a link" }), ".");
  }
}

/** A link's status as the API states it, or worked out for an older answer without one. */
function linkStatus(link) {
  if (link.status) return link.status;
  if (link.disabled) return "disabled";
  const pastExpiry = link.expires_at && new Date(link.expires_at) <= new Date();
  const usedUp = link.max_visits != null && (link.visits ?? 0) >= link.max_visits;
  return pastExpiry || usedUp ? "expired" : "active";
}

function metaItem(label, valueNode) {
  return h("div", { class: "meta-item" }, h("dt", { text: label }), valueNode);
}

function renderLinkItem(link) {
  const code = link.code;
  const status = linkStatus(link);
  const panelId = `qr-panel-${code}`;
  const time = (iso) => h("time", { datetime: iso, text: formatDateTime(iso) });
  // Each action's name carries the code, so "Delete" is never ambiguous in a list of them.
  const action = (cls, label, text, extra = {}) =>
    h("button", { type: "button", class: `button small ${cls}`, "aria-label": label, text, ...extra });

  const main = h(
    "div",
    { class: "link-main" },
    h(
      "p",
      { class: "link-head" },
      h("a", { class: "link-short url-text", href: link.short_url, text: link.short_url }),
      " ",
      h("span", { class: `link-status status-${status}`, text: status }),
    ),
    h(
      "p",
      { class: "link-dest" },
      h("span", { class: "visually-hidden", text: "Redirects to " }),
      h("span", { class: "link-target url-text", text: link.url }),
    ),
  );

  const meta = h(
    "dl",
    { class: "link-meta" },
    metaItem("Clicks", h("dd", { class: "link-clicks", text: String(link.clicks ?? 0) })),
    metaItem("Expires", link.expires_at
      ? h("dd", { class: "link-expires" }, time(link.expires_at))
      : h("dd", { class: "link-expires", text: "never" })),
    metaItem("Visits", h("dd", {
      class: "link-visits",
      text: link.max_visits != null ? `${link.visits ?? 0} / ${link.max_visits}` : "no limit",
    })),
    metaItem("Created", h("dd", { class: "link-created" }, time(link.created_at))),
  );

  const actions = h(
    "div",
    { class: "link-actions" },
    action("link-copy", `Copy ${code}`, "Copy"),
    action("link-qr", `QR code for ${code}`, "QR code", { "aria-expanded": "false", "aria-controls": panelId }),
    h("a", {
      class: "button small link-stats",
      href: `#/links/${encodeURIComponent(code)}/stats`,
      "aria-label": `Stats for ${code}`,
      text: "Stats",
    }),
    action("link-edit", `Edit ${code}`, "Edit"),
    action("danger-quiet link-delete", `Delete ${code}`, "Delete"),
  );

  const qrPanel = h(
    "div",
    { class: "link-qr-panel", id: panelId, hidden: true },
    h("div", { class: "qr" }),
    h(
      "div",
      { class: "qr-side" },
      action("link-qr-download", `Download PNG of ${code}`, "Download PNG"),
      h("p", { class: "inline-status qr-status", "aria-live": "polite" }),
    ),
  );

  return h("li", { class: "link card", "data-code": code }, main, meta, actions, qrPanel);
}

function findItem(code) {
  return linksList.querySelector(`li.link[data-code="${CSS.escape(code)}"]`);
}

function onListClick(event) {
  const button = event.target.closest("button");
  const item = button?.closest("li.link");
  if (!item || !linksList.contains(item)) return;
  const link = links.items.get(item.dataset.code);
  if (!link) return;
  if (button.classList.contains("link-copy")) copyLink(link);
  else if (button.classList.contains("link-qr")) toggleQr(item, link, button);
  else if (button.classList.contains("link-qr-download")) downloadQrPng(link.code, button, item.querySelector(".qr-status"));
  else if (button.classList.contains("link-edit")) openEdit(link, button);
  else if (button.classList.contains("link-delete")) openDelete(link, button);
}

async function copyLink(link) {
  const copied = await copyText(link.short_url);
  announce(linksMessage, copied ? `Copied ${link.code}` : `Could not copy ${link.code}: select the link and copy it yourself.`);
}

function toggleQr(item, link, button) {
  const panel = item.querySelector(".link-qr-panel");
  const open = panel.hidden;
  panel.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
  if (open && !panel.dataset.loaded) {
    panel.dataset.loaded = "true";
    loadQr(panel.querySelector(".qr"), link, panel.querySelector(".qr-status"));
  }
}

function scheduleSearch() {
  clearTimeout(links.searchTimer);
  links.searchTimer = setTimeout(() => loadLinks({ append: false }), SEARCH_DELAY_MS);
}

// ---------------------------------------------------------------------------------------------
// My links: editing

const editDialog = $("edit-dialog");
const editInputs = { url: $("edit-url"), expires_at: $("edit-expires_at"), max_visits: $("edit-max_visits") };
const editErrors = new FormErrors(
  { url: "edit-url", expires_at: "edit-expires_at", max_visits: "edit-max_visits" },
  "edit-form-error",
);
// `initial` holds the inputs' values at opening: only what differs from them is sent.
const edit = { link: null, opener: null, initial: null, busy: false };

function openEdit(link, opener) {
  edit.link = link;
  edit.opener = opener;
  editErrors.clear();
  $("edit-code").textContent = link.code;
  editInputs.url.value = link.url;
  editInputs.expires_at.value = link.expires_at ? toLocalInput(new Date(link.expires_at)) : "";
  editInputs.max_visits.value = link.max_visits ?? "";
  edit.initial = {
    url: editInputs.url.value,
    expires_at: editInputs.expires_at.value,
    max_visits: editInputs.max_visits.value,
  };
  $("edit-save").disabled = false;
  editDialog.showModal();
}

/** The merge patch of the changed fields (empty expiry or limit: null), or null after errors. */
function editPatch() {
  const { url, expires_at: expires, max_visits: maxVisits } = editInputs;
  const patch = {};
  if (url.value !== edit.initial.url) {
    if (url.value.trim() === "") editErrors.field("url", "Enter the target URL: a link always has one.");
    else patch.url = url.value;
  }
  const expiry = readDateTime(expires);
  if (expiry.invalid) editErrors.field("expires_at", "Enter a complete date and time, or leave the field empty.");
  else if (expires.value !== edit.initial.expires_at) patch.expires_at = expiry.empty ? null : expiry.date.toISOString();

  const limit = readNumber(maxVisits);
  if (limit.invalid) editErrors.field("max_visits", ERRORS["invalid_max_visits"].message);
  else if (maxVisits.value !== edit.initial.max_visits) patch.max_visits = limit.empty ? null : limit.value;

  return editErrors.focusFirstInvalid() ? null : patch;
}

async function onEditSubmit(event) {
  event.preventDefault();
  if (edit.busy || !edit.link) return;
  editErrors.clear();
  const patch = editPatch();
  if (!patch) return;
  const code = edit.link.code;
  if (Object.keys(patch).length === 0) {
    editDialog.close();
    announce(linksMessage, `Nothing changed in ${code}`);
    return;
  }

  const save = $("edit-save");
  edit.busy = true;
  setBusy(save, true);
  try {
    const updated = await api(linkPath(code), { method: "PATCH", body: patch });
    replaceItem(updated);
    if (edit.link?.code === code) editDialog.close();
    announce(linksMessage, `Saved ${code}`);
  } catch (error) {
    if (editDialog.open && edit.link?.code === code) {
      editErrors.apiError(error);
      if (!editErrors.focusFirstInvalid() && focusWasLost()) save.focus();
    } else {
      showMessage(linksError, `${code} was not saved. ${describeError(error).message}`);
    }
  } finally {
    edit.busy = false;
    setBusy(save, false);
  }
}

/** Updates a link's item in place, keeping its place in the list. */
function replaceItem(link) {
  links.items.set(link.code, link);
  findItem(link.code)?.replaceWith(renderLinkItem(link));
}

function onEditClose() {
  const { opener, link } = edit;
  edit.link = null;
  // The opener was replaced when the item was re-rendered: focus its successor.
  if (opener?.isConnected) opener.focus();
  else if (link) (findItem(link.code)?.querySelector(".link-edit") ?? views.links.heading).focus();
}

// ---------------------------------------------------------------------------------------------
// My links: deleting

const deleteDialog = $("delete-dialog");
const removal = { link: null, opener: null, busy: false, focusAfter: null };

function openDelete(link, opener) {
  removal.link = link;
  removal.opener = opener;
  removal.focusAfter = null;
  $("delete-code").textContent = link.code;
  hideMessage($("delete-error"));
  $("delete-confirm").disabled = false;
  deleteDialog.showModal();
  // The safe choice first: Enter or Space right away cancels.
  $("delete-cancel").focus();
}

async function onDeleteConfirm() {
  const link = removal.link;
  if (!link || removal.busy) return;
  const confirm = $("delete-confirm");
  removal.busy = true;
  confirm.disabled = true;
  try {
    await api(linkPath(link.code), { method: "DELETE" });
    const item = findItem(link.code);
    const neighbour = item?.nextElementSibling ?? item?.previousElementSibling;
    removal.focusAfter = neighbour?.querySelector(".link-short") ?? views.links.heading;
    item?.remove();
    links.items.delete(link.code);
    renderListFooter();
    deleteDialog.close();
    announce(linksMessage, `Deleted ${link.code}`);
  } catch (error) {
    showMessage($("delete-error"), describeError(error).message);
    $("delete-cancel").focus();
  } finally {
    removal.busy = false;
    confirm.disabled = false;
  }
}

function onDeleteClose() {
  const target = removal.focusAfter ?? (removal.opener?.isConnected ? removal.opener : views.links.heading);
  removal.link = null;
  removal.focusAfter = null;
  target.focus();
}

// ---------------------------------------------------------------------------------------------
// Stats

const statsView = $("view-stats");
const statsRange = $("stats-range");
const statsFrom = $("stats-from");
const statsTo = $("stats-to");
const statsChart = $("stats-chart");
const statsError = $("stats-error");
const rangeError = $("stats-range-error");

const RANGE_MS = { "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3, "30d": 30 * 24 * 3600e3 };
const TOP_TABLES = [
  ["referrers", "top-referrers"],
  ["countries", "top-countries"],
  ["browsers", "top-browsers"],
  ["os", "top-os"],
  ["devices", "top-devices"],
  ["sources", "top-sources"],
];
const SOURCE_LABELS = { link: "Link", qr: "QR scan" };

const stats = {
  code: null,
  data: null,
  customRange: null,
  seq: 0,
  controller: null,
  resizeTimer: 0,
  tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
};

function resetStats(code) {
  stats.controller?.abort();
  stats.seq += 1;
  stats.code = code;
  stats.data = null;
  statsChart.replaceChildren();
  statsChart.setAttribute("aria-label", "Clicks over time: 0 clicks");
  for (const id of ["total-clicks", "total-humans", "total-bots", "total-unique"]) $(id).textContent = "0";
  for (const [, id] of TOP_TABLES) $(id).tBodies[0].replaceChildren();
  $("stats-range-label").textContent = "";
  $("stats-short-url").hidden = true;
  $("stats-content").hidden = true;
  $("stats-loading").hidden = true;
  hideMessage(statsError);
  clearRangeError();
  setState(statsView, "loading");
}

function enterStats(route) {
  $("stats-title").textContent = `Stats for ${route.code}`;
  const signedIn = Boolean(auth.key);
  $("stats-signin").hidden = signedIn;
  $("stats-body").hidden = !signedIn;
  if (stats.code !== route.code) resetStats(route.code);
  if (!signedIn) {
    setState(statsView, "ready");
    return;
  }
  loadStats({ withLink: true });
}

function presetRange(choice) {
  const to = new Date();
  return { from: new Date(to.getTime() - (RANGE_MS[choice] ?? RANGE_MS["7d"])), to };
}

async function loadStats({ withLink = false } = {}) {
  const code = stats.code;
  if (!auth.key || code === null) return;
  const custom = statsRange.value === "custom";
  if (custom && !stats.customRange) return; // nothing applied yet
  const range = custom ? stats.customRange : presetRange(statsRange.value);

  stats.controller?.abort();
  const controller = new AbortController();
  stats.controller = controller;
  const seq = ++stats.seq;
  setState(statsView, "loading");
  hideMessage(statsError);
  $("stats-loading").hidden = false;
  $("stats-refresh").disabled = true;
  try {
    const [data] = await Promise.all([
      fetchStats(code, range, controller.signal),
      withLink ? loadStatsLink(code, controller.signal) : null,
    ]);
    if (seq !== stats.seq) return;
    $("stats-content").hidden = false; // first, so that the chart can measure its width
    renderStats(data);
    setState(statsView, "ready");
  } catch (error) {
    if (error.name === "AbortError" || seq !== stats.seq) return;
    const { message, signIn } = describeError(error, STATS_ERRORS);
    if (error.code === "invalid_range" || error.code === "too_many_buckets") showRangeError(message);
    else showMessage(statsError, message, { signIn });
    $("stats-content").hidden = true;
    setState(statsView, "error");
  } finally {
    if (seq === stats.seq) {
      $("stats-loading").hidden = true;
      $("stats-refresh").disabled = false;
    }
  }
}

async function fetchStats(code, range, signal) {
  const path = () =>
    `${linkPath(code)}/stats?${new URLSearchParams({
      from: range.from.toISOString(),
      to: range.to.toISOString(),
      tz: stats.tz,
      bots: "include", // the page shows humans and bots apart
    })}`;
  try {
    return await api(path(), { signal });
  } catch (error) {
    // A zone the server's tz database lacks: show the stats in UTC rather than none.
    if (!(error instanceof ApiError && error.code === "invalid_timezone" && stats.tz !== "UTC")) throw error;
    stats.tz = "UTC";
    return api(path(), { signal });
  }
}

/** Shows the short URL above the stats. A failure here is left to the stats call to explain. */
async function loadStatsLink(code, signal) {
  const short = $("stats-short-url");
  try {
    const link = await api(linkPath(code), { signal });
    if (stats.code !== code) return;
    short.href = link.short_url;
    short.textContent = link.short_url;
    short.hidden = false;
  } catch {
    short.hidden = true;
  }
}

function renderStats(data) {
  stats.data = data;
  const totals = data.totals ?? {};
  $("total-clicks").textContent = formatCount(totals.clicks);
  $("total-humans").textContent = formatCount(totals.humans);
  $("total-bots").textContent = formatCount(totals.bots);
  $("total-unique").textContent = formatCount(totals.unique_visitors);
  const zone = data.tz && data.tz !== Intl.DateTimeFormat().resolvedOptions().timeZone ? `, times in ${data.tz}` : "";
  $("stats-range-label").textContent =
    `${formatDateTime(data.from)} to ${formatDateTime(data.to)}, one bar per ${data.granularity}${zone}.`;
  drawChart(data);
  for (const [dimension, id] of TOP_TABLES) {
    const label = dimension === "sources" ? (v) => SOURCE_LABELS[v] ?? v : (v) => v;
    renderTop($(id), data.top?.[dimension] ?? [], label);
  }
}

function renderTop(table, rows, label) {
  const body = table.tBodies[0];
  if (rows.length === 0) {
    body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: "2", text: "No clicks yet" })));
    return;
  }
  body.replaceChildren(
    ...rows.map((row) =>
      h(
        "tr",
        {},
        h("td", { class: "value", "data-value": row.value, text: row.value === "" ? "(none)" : label(row.value) }),
        h("td", { class: "clicks", text: formatCount(row.clicks) }),
      ),
    ),
  );
}

// Range picker

function onRangeChange() {
  clearRangeError();
  const custom = statsRange.value === "custom";
  $("stats-custom").hidden = !custom;
  if (!custom) {
    loadStats();
    return;
  }
  // Start from what is shown, so a custom range is a small edit away.
  const shown = stats.customRange ?? (stats.data ? { from: new Date(stats.data.from), to: new Date(stats.data.to) } : presetRange("7d"));
  if (statsFrom.value === "") statsFrom.value = toLocalInput(shown.from);
  if (statsTo.value === "") statsTo.value = toLocalInput(shown.to);
  statsFrom.focus();
}

function onRangeSubmit(event) {
  event.preventDefault();
  clearRangeError();
  if (statsRange.value !== "custom") {
    loadStats();
    return;
  }
  const from = readDateTime(statsFrom);
  const to = readDateTime(statsTo);
  if (!from.date) return showRangeError("Enter the start of the range: a date and a time.", [statsFrom]);
  if (!to.date) return showRangeError("Enter the end of the range: a date and a time.", [statsTo]);
  if (from.date >= to.date) return showRangeError("The start of the range must be before its end.", [statsFrom, statsTo]);
  stats.customRange = { from: from.date, to: to.date };
  loadStats();
}

function showRangeError(message, inputs = statsRange.value === "custom" ? [statsFrom, statsTo] : []) {
  rangeError.textContent = message;
  rangeError.hidden = false;
  for (const input of inputs) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", rangeError.id);
  }
  inputs[0]?.focus();
}

function clearRangeError() {
  rangeError.textContent = "";
  rangeError.hidden = true;
  for (const input of [statsFrom, statsTo]) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

// The chart

/** A y axis from 0 with 3 to 5 gridlines at whole, round steps (1, 2 or 5 times a power of ten). */
function yScale(max) {
  const rough = max / 4;
  let step = 1;
  if (rough > 1) {
    const power = 10 ** Math.floor(Math.log10(rough));
    const fraction = rough / power;
    step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  }
  const steps = Math.min(4, Math.max(2, Math.ceil(max / step)));
  return { step, top: steps * step };
}

/**
 * A bucket's start as written by the server: the wall clock of the stats' time zone, with its
 * offset. Reading the digits (not converting to this browser's zone) labels each bucket as the
 * server cut it, DST days included. `utc` holds that wall clock for UTC formatters.
 */
function wallClock(start) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(start);
  if (match) {
    const [, y, mo, d, hh, mm] = match;
    return { utc: Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(hh), Number(mm)), time: `${hh}:${mm}` };
  }
  const date = new Date(start);
  const time = `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
  return { utc: Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()), time };
}

const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
const fullDayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  timeZone: "UTC",
});
const monthFormat = new Intl.DateTimeFormat(undefined, { month: "short", year: "numeric", timeZone: "UTC" });

function axisLabel(start, granularity) {
  const { utc, time } = wallClock(start);
  if (granularity === "hour") return time;
  if (granularity === "month") return monthFormat.format(utc);
  return dayFormat.format(utc);
}

function bucketLabel(start, granularity) {
  const { utc, time } = wallClock(start);
  if (granularity === "hour") return `${fullDayFormat.format(utc)}, ${time}`;
  if (granularity === "week") return `Week of ${fullDayFormat.format(utc)}`;
  if (granularity === "month") return monthFormat.format(utc);
  return fullDayFormat.format(utc);
}

const plural = (n, word) => `${formatCount(n)} ${word}${n === 1 ? "" : "s"}`;
const round2 = (n) => Math.round(n * 100) / 100;

/**
 * Draws the stacked bars: humans below, bots on top. The viewBox is the container's width in
 * pixels, so text keeps its size; the drawing is redone when the window is resized.
 */
function drawChart(data) {
  const series = data.series ?? [];
  const width = Math.max(280, Math.round($("stats-chart-wrap").clientWidth) || 640);
  const height = width < 520 ? 200 : 240;
  const pad = { top: 12, right: 12, bottom: 28, left: 48 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const max = series.reduce((m, bucket) => Math.max(m, bucket.clicks ?? 0), 0);
  const { step, top } = yScale(max);
  const yAt = (value) => round2(pad.top + plotHeight - (value / top) * plotHeight);
  const heightOf = (value) => round2((value / top) * plotHeight);

  statsChart.replaceChildren();
  statsChart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  statsChart.setAttribute("width", "100%");
  statsChart.setAttribute("aria-label", `Clicks over time: ${data.totals?.clicks ?? 0} clicks`);
  statsChart.append(
    s("title", { text: `Clicks over time for ${data.code}, one bar per ${data.granularity}: humans below, bots on top` }),
  );

  const grid = s("g", { class: "grid" });
  for (let value = 0; value <= top; value += step) {
    const y = yAt(value);
    grid.append(
      s("line", { class: value === 0 ? "axis-line" : "grid-line", x1: pad.left, x2: width - pad.right, y1: y, y2: y }),
      s("text", { class: "y-label", x: pad.left - 8, y, "text-anchor": "end", "dominant-baseline": "middle", text: formatCount(value) }),
    );
  }
  statsChart.append(grid);

  const band = series.length > 0 ? plotWidth / series.length : plotWidth;
  const barWidth = round2(Math.max(1, Math.min(48, band * 0.72)));
  const bars = s("g", { class: "bars" });
  series.forEach((bucket, i) => {
    const humans = bucket.humans ?? 0;
    const bots = bucket.bots ?? 0;
    const clicks = bucket.clicks ?? humans + bots;
    const x = round2(pad.left + i * band + (band - barWidth) / 2);
    bars.append(
      s(
        "g",
        { class: "bucket", "data-start": bucket.start, "data-humans": humans, "data-bots": bots, "data-clicks": clicks },
        s("title", {
          text: `${bucketLabel(bucket.start, data.granularity)}: ${plural(clicks, "click")} (${plural(humans, "human")}, ${plural(bots, "bot")})`,
        }),
        // An invisible full-height band, so that a bucket's tooltip shows even without clicks.
        s("rect", { class: "bucket-hit", x: round2(pad.left + i * band), y: pad.top, width: round2(band), height: plotHeight }),
        s("rect", { class: "bar-humans", x, y: yAt(humans), width: barWidth, height: heightOf(humans) }),
        s("rect", { class: "bar-bots", x, y: yAt(humans + bots), width: barWidth, height: heightOf(bots) }),
      ),
    );
  });
  statsChart.append(bars);

  const axis = s("g", { class: "x-axis" });
  const every = Math.max(1, Math.ceil(series.length / Math.max(2, Math.floor(plotWidth / 72))));
  for (let i = 0; i < series.length; i += every) {
    const centre = pad.left + (i + 0.5) * band;
    const x = round2(Math.min(Math.max(centre, pad.left + 20), width - pad.right - 20));
    axis.append(s("text", { class: "x-label", x, y: height - 8, "text-anchor": "middle", text: axisLabel(series[i].start, data.granularity) }));
  }
  statsChart.append(axis);
}

function onResize() {
  clearTimeout(stats.resizeTimer);
  stats.resizeTimer = setTimeout(() => {
    if (stats.data && !statsView.hidden) drawChart(stats.data);
  }, 150);
}

// ---------------------------------------------------------------------------------------------
// Start

function wireEvents() {
  window.addEventListener("hashchange", () => showRoute({ focus: true }));
  window.addEventListener("storage", onStorage);
  window.addEventListener("resize", onResize);

  // The skip link's #main is no route: focus the content without changing the hash.
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });

  shortenForm.addEventListener("submit", onShortenSubmit);
  $("result-copy").addEventListener("click", onResultCopy);
  $("result-qr-download").addEventListener("click", onResultDownload);

  $("key-form").addEventListener("submit", onKeySubmit);
  $("forget-key").addEventListener("click", signOut);

  $("links-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadLinks({ append: false });
  });
  linksSearch.addEventListener("input", scheduleSearch);
  linksStatus.addEventListener("change", () => loadLinks({ append: false }));
  linksMore.addEventListener("click", () => loadLinks({ append: true }));
  linksList.addEventListener("click", onListClick);

  $("edit-form").addEventListener("submit", onEditSubmit);
  $("edit-cancel").addEventListener("click", () => editDialog.close());
  editDialog.addEventListener("close", onEditClose);
  $("delete-confirm").addEventListener("click", onDeleteConfirm);
  $("delete-cancel").addEventListener("click", () => deleteDialog.close());
  deleteDialog.addEventListener("close", onDeleteClose);

  statsRange.addEventListener("change", onRangeChange);
  $("stats-range-form").addEventListener("submit", onRangeSubmit);
  $("stats-refresh").addEventListener("click", () => loadStats());
}

function start() {
  wireEvents();
  renderAuth();
  renderKeyStatus();
  // The shorten view's URL field has autofocus; any other first view gets the focus on its heading.
  const first = parseRoute(location.hash);
  showRoute({ focus: Boolean(first) && first.view !== "shorten" });
}

start();

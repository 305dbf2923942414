// Building elements without HTML strings (every value from the server is text, never markup),
// and the small formatters every page uses.

/** el("td", {class: "x", dataset: {agent: id}}, "text", child, ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function replace(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** A verdict badge: trusted, untrusted, error, or "not attested". */
export function verdictBadge(verdict) {
  const v = verdict ?? "none";
  const text = verdict ?? "not attested";
  return el("span", { class: `badge verdict-${v}`, dataset: { verdict: v } }, text);
}

export function stateBadge(state) {
  return el("span", { class: `badge state-${state}`, dataset: { state } }, state);
}

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago" */
export function age(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function ms(value) {
  if (value === null || value === undefined) return "…";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}

export const short = (hex, n = 16) => (hex && hex.length > n ? `${hex.slice(0, n)}…` : hex ?? "");

export const agentLink = (id) => el("a", { href: `#/agent/${encodeURIComponent(id)}` }, id);

export function errorBox(err) {
  return el("div", { class: "error", role: "alert" }, err?.message ?? String(err));
}

// The operator API over fetch, and the server's event stream (GET /v1/events) read with a
// stream reader: EventSource cannot send the Authorization header. The token is kept in this
// tab's sessionStorage only; it never goes into a URL, a log or the page.

const TOKEN_KEY = "vroot.operator-token";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

function headers(extra = {}) {
  return { Authorization: `Bearer ${token() ?? ""}`, ...extra };
}

/** GET or POST `path` as the operator; the JSON answer, or an ApiError from its problem details. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, cache: "no-store", headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "The server did not answer", String(err.message ?? err));
  }
  const type = response.headers.get("content-type") ?? "";
  const doc = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    throw new ApiError(response.status, doc?.title ?? `HTTP ${response.status}`, doc?.detail ?? "");
  }
  return doc;
}

/** The agent's latest result, or null when it was never attested (404). */
export async function latestResult(agentId) {
  try {
    return await api(`/v1/agents/${encodeURIComponent(agentId)}/result`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/** One server-sent-events message block -> {id, event, data} (data parsed as JSON), or null. */
export function parseEventBlock(block) {
  const message = { id: null, event: "message", data: [], retry: null };
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") message.id = value;
    else if (field === "event") message.event = value;
    else if (field === "data") message.data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) message.retry = Number(value);
  }
  if (message.data.length === 0) return message.retry === null ? null : { retry: message.retry };
  let data;
  try {
    data = JSON.parse(message.data.join("\n"));
  } catch {
    data = message.data.join("\n");
  }
  return { id: message.id, event: message.event, data, retry: message.retry };
}

/**
 * The event stream, reconnecting after each end (the server closes it after its longest wait) and
 * resuming after the last event seen (Last-Event-ID). `onEvent(event)` gets each event's JSON;
 * `onState(state)` gets "connecting", "live", "reconnecting" or "refused" (a 401/403: it stops).
 */
export class EventFeed {
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.retryMs = 1000;
    this.abort = new AbortController();
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
  }

  async run() {
    while (!this.stopped) {
      this.onState("connecting");
      try {
        const extra = { Accept: "text/event-stream" };
        if (this.lastId !== null) extra["Last-Event-ID"] = this.lastId;
        const response = await fetch("/v1/events", { headers: headers(extra), cache: "no-store",
                                                     signal: this.abort.signal });
        if (response.status === 401 || response.status === 403) {
          this.onState("refused");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onState("live");
        await this.read(response.body);
      } catch (err) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = parseEventBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (message === null) continue;
        if (message.retry !== null && message.retry !== undefined) this.retryMs = message.retry;
        if (message.data === undefined) continue;
        if (message.id !== null) this.lastId = message.id;
        this.onEvent(typeof message.data === "object" ? message.data
                     : { id: message.id, kind: message.event, body: message.data });
      }
    }
  }
}

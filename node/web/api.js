// The client API as the page uses it (SPEC §15): HTTP with the session cookie and the CSRF
// token, and one WebSocket that resumes by cursor after a drop (§15.4.3).

const SAFE = new Set(["GET", "HEAD"]);
let csrfToken = null;

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

/** One JSON request; throws ApiError for a refusal. */
export async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Is this page paired? The server sets a readable marker beside its HttpOnly cookie. */
export function looksPaired() {
  return document.cookie.split("; ").includes("hearthmesh_paired=1");
}

/**
 * The live stream: `onFrame(frame)` for every frame; reconnects with the cursor of the last
 * durable event seen, so nothing is missed or doubled; `onState("open"|"closed")`.
 */
export class Live {
  constructor({ onFrame, onState }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.cursor = null;
    this.ws = null;
    this.stopped = false;
    this.delayMs = 250;
    this.queue = [];
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = this.cursor ? `?cursor=${encodeURIComponent(this.cursor)}` : "";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws${query}`);
    this.ws = ws;
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.event === "ready") {
        this.delayMs = 250;
        // Resumed: the replay follows with its own cursors; keep ours until they come.
        if (!frame.resumed) this.cursor = frame.cursor;
        this.onState("open", frame);
        for (const text of this.queue.splice(0)) ws.send(text);
      } else if (frame.cursor) {
        this.cursor = frame.cursor;
      }
      this.onFrame(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onState("closed");
      if (this.stopped) return;
      setTimeout(() => this.connect(), this.delayMs);
      this.delayMs = Math.min(this.delayMs * 2, 10_000);
    };
  }

  /** Send a frame now, or as soon as the connection is (re)opened. */
  send(frame) {
    const text = JSON.stringify(frame);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    else this.queue.push(text);
  }
}

/**
 * Upload a blob (SPEC §15.5.3) with progress: `onProgress(fraction)` as bytes go out; resolves
 * to `{digest, size, content_type}`. XMLHttpRequest, because fetch reports no upload progress.
 */
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/media");
    request.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    if (csrfToken) request.setRequestHeader("X-CSRF-Token", csrfToken);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      if (request.status === 201) resolve(request.response);
      else reject(new ApiError(request.status, request.response));
    };
    request.onerror = () => reject(new ApiError(0, null));
    request.send(file);
  });
}

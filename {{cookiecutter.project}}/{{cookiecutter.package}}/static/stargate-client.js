// A WebSocket that reconnects by itself when that can help, with jittered
// exponential backoff.
//
//   const socket = new StargateSocket("/jobs/1/");
//   socket.addEventListener("status", (e) => show(e.detail));   // connecting | live | reconnecting | closed
//   socket.addEventListener("message", (e) => handle(e.detail)); // a string, or an ArrayBuffer
//   socket.addEventListener("disconnect", (e) => {
//     const { code, reason, reconnecting } = e.detail;            // why, and what happens next
//   });
//   socket.send("hello");                                        // false while not live
//   socket.close();                                              // for good
//
// With `positions: true` it asks the server for positions (stargate's
// `stargate.history_size`, see stargate.positions): each message of the
// resource comes with its place in the resource's history, the socket keeps
// the last one (in sessionStorage too, so a reload continues from it) and,
// after every reconnect, asks for what it missed since.  It hands each
// message on once, in order, and says so when the server could not give
// everything back:
//
//   const socket = new StargateSocket("/jobs/1/", { positions: true, since: "3fa2:17" });
//   socket.addEventListener("message", (e) => handle(e.detail, e.position)); // null for direct ones
//   socket.addEventListener("resync", (e) => reloadState());    // something was missed: reload
//
// `since` is the position the page was rendered at (read before its state).
//
// It reconnects after the closes that a new connection may cure (the server
// going away or restarting, a lost network, an overloaded server) and not
// after the ones it would only repeat (a normal close by the server, a
// protocol error, a refused message, a policy violation, application codes
// 4000-4999), unless `shouldReconnect` says otherwise.  It reconnects at once
// when the browser comes back online or the tab becomes visible again.
//
// Reusable as it is: it knows nothing of the page.

export const STATUS = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

// Going away (1001), abnormal closure (1006: network lost, handshake
// refused), internal error (1011), service restart (1012), try again later
// (1013), bad gateway (1014).
export const RECONNECT_CODES = Object.freeze([1001, 1006, 1011, 1012, 1013, 1014]);

export function reconnectsAfter(code) {
  return RECONNECT_CODES.includes(code);
}

// Turn "/jobs/1/" into "ws://host/jobs/1/" (wss:// on an https:// page).
export function webSocketUrl(path, location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

// The delay before reconnection attempt `attempt` (0, 1, 2, ...): doubling from
// `base` up to `cap` milliseconds, then a random half of it dropped, so that a
// crowd of clients does not come back all at once after a restart.
export function backoffDelay(attempt, { base = 500, cap = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + random() * (ceiling / 2);
}

const FRAME_KINDS = ["msg", "sync", "resync"];

// Read a position written "EPOCH:OFFSET"; null for anything else.
export function parsePosition(text) {
  const match = /^([0-9a-z]{1,64}):([0-9]{1,15})$/.exec(text ?? "");
  return match ? { epoch: match[1], offset: Number(match[2]) } : null;
}

export function formatPosition({ epoch, offset }) {
  return `${epoch}:${offset}`;
}

// Read a frame of stargate's positions protocol: { kind, position, body }
// with kind "msg", "sync", "resync" or "direct" (position null); null for
// anything else.  `data` is a string or an ArrayBuffer (binary messages).
export function parseFrame(data) {
  let header;
  let body;
  if (typeof data === "string") {
    const newline = data.indexOf("\n");
    if (newline < 0) return null;
    header = data.slice(0, newline);
    body = data.slice(newline + 1);
  } else {
    const bytes = new Uint8Array(data);
    const newline = bytes.subarray(0, 100).indexOf(10);
    if (newline < 0) return null;
    header = new TextDecoder().decode(bytes.subarray(0, newline));
    body = data.slice(newline + 1);
  }
  if (header === "direct") return { kind: "direct", position: null, body };
  const [kind, epoch, offset, ...rest] = header.split(" ");
  const position = parsePosition(`${epoch}:${offset}`);
  if (rest.length || !FRAME_KINDS.includes(kind) || !position) return null;
  if (kind !== "msg" && body !== "") return null;
  return { kind, position, body: kind === "msg" ? body : null };
}

function sessionStore() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage refused (a sandboxed frame, a privacy setting)
  }
}

export class StargateSocket extends EventTarget {
  // protocols: subprotocols to offer; base, cap: the backoff (ms); stableAfter:
  // how long (ms) a connection must last before the backoff starts over;
  // shouldReconnect(code, reason): whether to reconnect after a close;
  // positions: ask for positions (see above); since: the position the page
  // was rendered at; storage: where the last position outlives the page
  // (sessionStorage; null for nowhere).
  constructor(
    path,
    {
      protocols = [],
      base = 500,
      cap = 30000,
      stableAfter = 5000,
      shouldReconnect = reconnectsAfter,
      positions = false,
      since = null,
      storage = sessionStore(),
    } = {},
  ) {
    super();
    this.url = path.startsWith("ws") ? path : webSocketUrl(path);
    this.positions = positions;
    this.storage = positions ? storage : null;
    this.storageKey = `stargate.position ${this.url}`;
    this.position = positions ? this.startingPosition(parsePosition(since)) : null;
    this.framed = false;
    this.protocols = protocols;
    this.base = base;
    this.cap = cap;
    this.stableAfter = stableAfter;
    this.shouldReconnect = shouldReconnect;
    this.attempt = 0;
    this.status = STATUS.CONNECTING;
    this.socket = null;
    this.timer = null;
    this.stableTimer = null;
    this.stopped = false;
    this.wakeUp = () => {
      if (this.status === STATUS.RECONNECTING && !this.socket && document.visibilityState !== "hidden") {
        clearTimeout(this.timer);
        this.connect();
      }
    };
    window.addEventListener("online", this.wakeUp);
    document.addEventListener("visibilitychange", this.wakeUp);
    this.connect();
  }

  // Where to start: the position stored by an earlier page of this tab if
  // it is of the same history and not past the rendered one (the messages
  // in between are then received again, in order), else the rendered one.
  startingPosition(rendered) {
    let stored = null;
    try {
      stored = parsePosition(this.storage?.getItem(this.storageKey));
    } catch {
      stored = null;
    }
    if (stored && (!rendered || (stored.epoch === rendered.epoch && stored.offset <= rendered.offset))) {
      return stored;
    }
    return rendered;
  }

  connectUrl() {
    if (!this.positions) return this.url;
    const since = this.position ? formatPosition(this.position) : "";
    const separator = this.url.includes("?") ? "&" : "?";
    return `${this.url}${separator}since=${encodeURIComponent(since)}`;
  }

  connect() {
    this.timer = null;
    this.framed = false;
    this.setStatus(this.attempt === 0 ? STATUS.CONNECTING : STATUS.RECONNECTING);
    const socket = new WebSocket(this.connectUrl(), this.protocols);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this.setStatus(STATUS.LIVE);
      // A connection that drops at once (a server that accepts, then fails)
      // must not reset the backoff: only one that lasted does.
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, this.stableAfter);
    });
    socket.addEventListener("message", (event) => this.received(event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event));
    this.socket = socket;
  }

  closed(socket, { code, reason }) {
    if (this.socket !== socket) return;
    this.socket = null;
    clearTimeout(this.stableTimer);
    const reconnecting = !this.stopped && this.shouldReconnect(code, reason);
    this.dispatchEvent(new CustomEvent("disconnect", { detail: { code, reason, reconnecting } }));
    if (!reconnecting) {
      this.stop();
      return;
    }
    const delay = backoffDelay(this.attempt, { base: this.base, cap: this.cap });
    this.attempt += 1;
    this.setStatus(STATUS.RECONNECTING);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  received(data) {
    if (!this.positions) {
      this.emit(data, null);
      return;
    }
    const frame = parseFrame(data);
    if (!this.framed && !frame) {
      // The server keeps no history: it sends the bare messages.
      console.warn("stargate: the server does not send positions; messages may be missed");
      this.positions = false;
      this.emit(data, null);
      return;
    }
    this.framed = true;
    if (!frame) {
      console.error("stargate: not a frame of the positions protocol", data);
    } else if (frame.kind === "direct") {
      this.emit(frame.body, null);
    } else if (frame.kind === "sync") {
      this.keep(frame.position);
    } else if (frame.kind === "resync") {
      this.resync(frame.position);
    } else {
      const { epoch, offset } = frame.position;
      const last = this.position;
      if (last && last.epoch === epoch && offset <= last.offset) return; // had it
      if (last && (last.epoch !== epoch || offset !== last.offset + 1)) {
        // A gap the server did not report: never hide it.
        this.resync({ epoch, offset: offset - 1 });
      }
      this.keep(frame.position);
      this.emit(frame.body, frame.position);
    }
  }

  emit(data, position) {
    const event = new CustomEvent("message", { detail: data });
    event.position = position;
    this.dispatchEvent(event);
  }

  resync(position) {
    this.keep(position);
    this.dispatchEvent(new CustomEvent("resync", { detail: position }));
  }

  keep(position) {
    this.position = position;
    try {
      this.storage?.setItem(this.storageKey, formatPosition(position));
    } catch {
      // Full or refused: the position still lives as long as the page.
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  send(data) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(data);
    return true;
  }

  // Close for good: no reconnection, and the listeners of the page let go.
  close(code = 1000, reason = "") {
    this.stopped = true;
    if (this.socket) this.socket.close(code, reason);
    else this.stop();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    window.removeEventListener("online", this.wakeUp);
    document.removeEventListener("visibilitychange", this.wakeUp);
    this.setStatus(STATUS.CLOSED);
  }
}

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

export class StargateSocket extends EventTarget {
  // protocols: subprotocols to offer; base, cap: the backoff (ms); stableAfter:
  // how long (ms) a connection must last before the backoff starts over;
  // shouldReconnect(code, reason): whether to reconnect after a close.
  constructor(
    path,
    { protocols = [], base = 500, cap = 30000, stableAfter = 5000, shouldReconnect = reconnectsAfter } = {},
  ) {
    super();
    this.url = path.startsWith("ws") ? path : webSocketUrl(path);
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

  connect() {
    this.timer = null;
    this.setStatus(this.attempt === 0 ? STATUS.CONNECTING : STATUS.RECONNECTING);
    const socket = new WebSocket(this.url, this.protocols);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this.setStatus(STATUS.LIVE);
      // A connection that drops at once (a server that accepts, then fails)
      // must not reset the backoff: only one that lasted does.
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, this.stableAfter);
    });
    socket.addEventListener("message", (event) => {
      this.dispatchEvent(new CustomEvent("message", { detail: event.data }));
    });
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

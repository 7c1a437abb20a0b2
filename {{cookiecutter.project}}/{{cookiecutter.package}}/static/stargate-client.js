// A WebSocket that reconnects by itself, with jittered exponential backoff.
//
//   const socket = new StargateSocket("/jobs/1/");
//   socket.addEventListener("status", (e) => show(e.detail));   // connecting | live | reconnecting | closed
//   socket.addEventListener("message", (e) => handle(e.detail)); // a string, or an ArrayBuffer
//   socket.send("hello");                                        // false while not live
//   socket.close();                                              // for good
//
// Reusable as it is: it knows nothing of the page.

export const STATUS = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

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
  constructor(path, { protocols = [], base = 500, cap = 30000 } = {}) {
    super();
    this.url = path.startsWith("ws") ? path : webSocketUrl(path);
    this.protocols = protocols;
    this.base = base;
    this.cap = cap;
    this.attempt = 0;
    this.status = STATUS.CONNECTING;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    this.connect();
  }

  connect() {
    this.setStatus(this.attempt === 0 ? STATUS.CONNECTING : STATUS.RECONNECTING);
    const socket = new WebSocket(this.url, this.protocols);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setStatus(STATUS.LIVE);
    });
    socket.addEventListener("message", (event) => {
      this.dispatchEvent(new CustomEvent("message", { detail: event.data }));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.dispatchEvent(new CustomEvent("disconnect", { detail: event.code }));
      if (this.stopped) {
        this.setStatus(STATUS.CLOSED);
        return;
      }
      const delay = backoffDelay(this.attempt, { base: this.base, cap: this.cap });
      this.attempt += 1;
      this.setStatus(STATUS.RECONNECTING);
      this.timer = setTimeout(() => this.connect(), delay);
    });
    this.socket = socket;
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

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
    else this.setStatus(STATUS.CLOSED);
  }
}

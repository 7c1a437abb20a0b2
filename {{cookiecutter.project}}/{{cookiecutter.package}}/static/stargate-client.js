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
// when the browser comes back online or the tab becomes visible again.  A
// socket that never opened gives up after `giveUpAfter` attempts (5): its
// close event then says `gaveUp: true`.
//
// StargateConnection (below) carries any number of such streams over one
// WebSocket.  Reusable as it is: it knows nothing of the page.

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

// Going away (1001) and service restart (1012): the server is closing its
// clients, and they all know it at about the same time.  The first attempt
// after it waits a random part of `spread` milliseconds, so that the tabs of
// a process that stops do not all come back to the others in the same
// second; later attempts back off as after any other close.
export const SPREAD_CODES = Object.freeze([1001, 1012]);

export function reconnectDelay(code, attempt, { base, cap, spread = 5000, random = Math.random } = {}) {
  if (attempt === 0 && SPREAD_CODES.includes(code)) return random() * spread;
  return backoffDelay(attempt, { base, cap, random });
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

// What a socket and a subscription share: the messages of one resource, with
// their positions when asked for (see above), handed on once and in order.
class Stream extends EventTarget {
  constructor(key, { positions = false, since = null, storage = sessionStore() } = {}) {
    super();
    this.positions = positions;
    this.storage = positions ? storage : null;
    this.storageKey = `stargate.position ${key}`;
    this.position = positions ? this.startingPosition(parsePosition(since)) : null;
    this.framed = false;
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

  // What the server is asked for: "" (from now) or "EPOCH:OFFSET".
  sinceText() {
    return this.position ? formatPosition(this.position) : "";
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
}

// A WebSocket that reconnects: what StargateSocket and StargateConnection
// share.  Subclasses say what to do on open and with each message.
class Reconnecting {
  constructor(owner, url, { protocols = [], base = 500, cap = 30000, spread = 5000, stableAfter = 5000, shouldReconnect = reconnectsAfter, giveUpAfter = 5 }) {
    this.owner = owner; // an EventTarget with setStatus(), opened(), received(), lost(), stop()
    this.url = url;
    this.protocols = protocols;
    this.base = base;
    this.cap = cap;
    this.spread = spread;
    this.stableAfter = stableAfter;
    this.shouldReconnect = shouldReconnect;
    this.giveUpAfter = giveUpAfter;
    this.everOpened = false;
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.stableTimer = null;
    this.stopped = false;
    this.wakeUp = () => {
      if (this.owner.status === STATUS.RECONNECTING && !this.socket && document.visibilityState !== "hidden") {
        clearTimeout(this.timer);
        this.connect();
      }
    };
    window.addEventListener("online", this.wakeUp);
    document.addEventListener("visibilitychange", this.wakeUp);
  }

  connect() {
    this.timer = null;
    this.owner.setStatus(this.attempt === 0 ? STATUS.CONNECTING : STATUS.RECONNECTING);
    const socket = new WebSocket(this.owner.connectUrl(), this.protocols);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this.everOpened = true;
      // A connection that drops at once (a server that accepts, then fails)
      // must not reset the backoff: only one that lasted does.
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, this.stableAfter);
      this.owner.opened();
    });
    socket.addEventListener("message", (event) => this.owner.received(event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event));
    this.socket = socket;
  }

  closed(socket, { code, reason }) {
    if (this.socket !== socket) return;
    this.socket = null;
    clearTimeout(this.stableTimer);
    // Refused every time since the page loaded (an origin the server does
    // not allow, a proxy that does not pass upgrades): retrying will not
    // help, and saying so will.  A server that was reached once may come
    // back: that is retried for ever.
    const gaveUp = !this.everOpened && this.attempt + 1 >= this.giveUpAfter;
    const reconnecting = !this.stopped && !gaveUp && this.shouldReconnect(code, reason);
    this.owner.lost({ code, reason, reconnecting, gaveUp });
    if (!reconnecting) {
      this.stop();
      return;
    }
    const delay = reconnectDelay(code, this.attempt, { base: this.base, cap: this.cap, spread: this.spread });
    this.attempt += 1;
    this.owner.setStatus(STATUS.RECONNECTING);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  get live() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (!this.live) return false;
    this.socket.send(data);
    return true;
  }

  close(code, reason) {
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
    this.owner.stop();
  }
}

export class StargateSocket extends Stream {
  // protocols: subprotocols to offer; giveUpAfter: failed opens in a row,
  // before any succeeded, after which it stops (the close event says
  // gaveUp: true); base, cap: the backoff (ms); spread: the most (ms) the
  // first attempt after a 1001 or 1012 waits (see reconnectDelay); stableAfter:
  // how long (ms) a connection must last before the backoff starts over;
  // shouldReconnect(code, reason): whether to reconnect after a close;
  // positions: ask for positions (see above); since: the position the page
  // was rendered at; storage: where the last position outlives the page
  // (sessionStorage; null for nowhere).
  constructor(path, options = {}) {
    const url = path.startsWith("ws") ? path : webSocketUrl(path);
    super(url, options);
    this.url = url;
    this.status = STATUS.CONNECTING;
    this.link = new Reconnecting(this, url, options);
    this.link.connect();
  }

  connectUrl() {
    this.framed = false;
    if (!this.positions) return this.url;
    const separator = this.url.includes("?") ? "&" : "?";
    return `${this.url}${separator}since=${encodeURIComponent(this.sinceText())}`;
  }

  opened() {
    this.setStatus(STATUS.LIVE);
  }

  lost(detail) {
    this.dispatchEvent(new CustomEvent("disconnect", { detail }));
  }

  send(data) {
    return this.link.send(data);
  }

  // Close for good: no reconnection, and the listeners of the page let go.
  close(code = 1000, reason = "") {
    this.link.close(code, reason);
  }

  stop() {
    this.setStatus(STATUS.CLOSED);
  }
}

// ---------------------------------------------------------------------------
// One WebSocket for many resources: a multiplexing endpoint of stargate
// (config.add_websocket_multiplexer("/socket"), protocol stargate.v1).
//
//   const connection = new StargateConnection("/socket");
//   const job = connection.subscribe("/jobs/1/", { positions: true, since: "3fa2:17" });
//   job.addEventListener("status", (e) => show(e.detail));      // connecting | live | reconnecting | closed
//   job.addEventListener("message", (e) => handle(e.detail, e.position));
//   job.addEventListener("resync", (e) => reloadState());
//   job.addEventListener("close", (e) => {
//     const { code, reason, reconnecting } = e.detail;           // 4403: not allowed, 4404: not found,
//   });                                                          // or the connection's close
//   job.send("hello");                                          // false while not live
//   job.close();                                                // unsubscribe
//
// Each subscription is served by the resource's own WebSocket view, as a
// dedicated socket on its path would be.  Subscriptions made while the
// connection is down are sent when it opens; after every reconnect all of
// them are sent again at once, each from its own position.  A subscription
// the server ends is subscribed again (after a backoff of its own) only for
// the codes a reconnect may cure, as for a socket: never after a refusal
// (4000-4999) or a normal end.

export const SUBPROTOCOL = "stargate.v1";

// Split a frame of the envelope into its header (parsed) and the rest
// (null without a newline); null for a frame that is not one.
export function parseEnvelope(data) {
  let line;
  let rest = null;
  if (typeof data === "string") {
    const newline = data.indexOf("\n");
    line = newline < 0 ? data : data.slice(0, newline);
    if (newline >= 0) rest = data.slice(newline + 1);
  } else {
    const bytes = new Uint8Array(data);
    const newline = bytes.indexOf(10);
    if (newline < 0) return null;
    line = new TextDecoder().decode(bytes.subarray(0, newline));
    rest = data.slice(newline + 1);
  }
  try {
    return { header: JSON.parse(line), rest };
  } catch {
    return null;
  }
}

const encoder = new TextEncoder();

// A message for subscription `id`, as the envelope frames it.
export function envelope(id, data) {
  const header = `${JSON.stringify(id)}\n`;
  if (typeof data === "string") return header + data;
  const body = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const head = encoder.encode(header);
  const frame = new Uint8Array(head.length + body.length);
  frame.set(head);
  frame.set(body, head.length);
  return frame.buffer;
}

export class StargateSubscription extends Stream {
  constructor(connection, id, path, options = {}) {
    super(`${connection.url} ${path}`, options);
    this.connection = connection;
    this.id = id;
    this.path = path;
    this.status = STATUS.CONNECTING;
    this.attempt = 0;
    this.timer = null;
    this.stableTimer = null;
    this.shouldResubscribe = options.shouldReconnect ?? reconnectsAfter;
  }

  // The frame that asks for it, from where it stands.
  subscribeFrame() {
    this.framed = false;
    const command = ["subscribe", this.id, this.path];
    if (this.positions) command.push(this.sinceText());
    return JSON.stringify(command);
  }

  subscribed() {
    this.setStatus(STATUS.LIVE);
    this.stableTimer = setTimeout(() => {
      this.attempt = 0;
    }, this.connection.link.stableAfter);
  }

  // The server ended it (or refused it).
  ended(code, reason) {
    clearTimeout(this.stableTimer);
    const reconnecting = this.shouldResubscribe(code, reason);
    this.dispatchEvent(new CustomEvent("close", { detail: { code, reason, reconnecting } }));
    if (!reconnecting) {
      this.stop();
      return;
    }
    const { base, cap } = this.connection.link;
    const delay = backoffDelay(this.attempt, { base, cap });
    this.attempt += 1;
    this.setStatus(STATUS.RECONNECTING);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connection.resubscribe(this);
    }, delay);
  }

  // Its connection dropped (a close event with the connection's code and
  // reason): it is subscribed again when the connection comes back.
  disconnected(detail) {
    clearTimeout(this.stableTimer);
    clearTimeout(this.timer);
    this.timer = null;
    if (this.status === STATUS.CLOSED) return;
    this.dispatchEvent(new CustomEvent("close", { detail }));
    if (detail.reconnecting) this.setStatus(STATUS.RECONNECTING);
    else this.stop();
  }

  send(data) {
    if (this.status !== STATUS.LIVE) return false;
    return this.connection.link.send(envelope(this.id, data));
  }

  // Unsubscribe, for good.
  close() {
    if (this.status === STATUS.CLOSED) return;
    this.connection.unsubscribe(this);
    this.stop();
  }

  stop() {
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    this.connection.forget(this);
    this.setStatus(STATUS.CLOSED);
  }
}

export class StargateConnection extends EventTarget {
  // path: the multiplexing endpoint; the options of StargateSocket but
  // positions and since, which are each subscription's.
  constructor(path = "/socket", options = {}) {
    super();
    this.url = path.startsWith("ws") ? path : webSocketUrl(path);
    this.options = options;
    this.subscriptions = new Map();
    this.ids = 0;
    this.status = STATUS.CONNECTING;
    const protocols = [SUBPROTOCOL, ...(options.protocols ?? [])];
    this.link = new Reconnecting(this, this.url, { ...options, protocols });
    this.link.connect();
  }

  // Subscribe to the resource at `path`: options positions, since, storage,
  // shouldReconnect (for this subscription's ends).
  subscribe(path, options = {}) {
    this.ids += 1;
    const subscription = new StargateSubscription(this, String(this.ids), path, options);
    this.subscriptions.set(subscription.id, subscription);
    if (this.link.live) this.link.send(subscription.subscribeFrame());
    return subscription;
  }

  resubscribe(subscription) {
    if (this.subscriptions.get(subscription.id) !== subscription) return;
    subscription.setStatus(STATUS.CONNECTING);
    if (this.link.live) this.link.send(subscription.subscribeFrame());
  }

  unsubscribe(subscription) {
    if (this.subscriptions.get(subscription.id) === subscription) {
      this.link.send(JSON.stringify(["unsubscribe", subscription.id]));
    }
  }

  forget(subscription) {
    if (this.subscriptions.get(subscription.id) === subscription) {
      this.subscriptions.delete(subscription.id);
    }
  }

  connectUrl() {
    return this.url;
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  // Open: every subscription at once, each from where it stands.
  opened() {
    this.setStatus(STATUS.LIVE);
    for (const subscription of this.subscriptions.values()) {
      if (subscription.timer === null) {
        subscription.setStatus(STATUS.CONNECTING);
        this.link.send(subscription.subscribeFrame());
      }
    }
  }

  received(data) {
    const frame = parseEnvelope(data);
    const header = frame?.header;
    if (typeof header === "string" && frame.rest !== null) {
      this.subscriptions.get(header)?.received(frame.rest);
    } else if (Array.isArray(header) && header[0] === "subscribed") {
      this.subscriptions.get(header[1])?.subscribed();
    } else if (Array.isArray(header) && header[0] === "closed") {
      this.subscriptions.get(header[1])?.ended(header[2], header[3]);
    } else if (Array.isArray(header) && header[0] === "error") {
      console.error(`stargate: the server could not act on a frame: ${header[2]}`);
    } else {
      console.error("stargate: not a frame of the stargate.v1 envelope", data);
    }
  }

  lost(detail) {
    this.dispatchEvent(new CustomEvent("disconnect", { detail }));
    for (const subscription of [...this.subscriptions.values()]) {
      subscription.disconnected(detail);
    }
  }

  // Close for good: every subscription ends.
  close(code = 1000, reason = "") {
    this.link.close(code, reason);
  }

  stop() {
    for (const subscription of [...this.subscriptions.values()]) subscription.stop();
    this.setStatus(STATUS.CLOSED);
  }
}

// The id of this tab, for presence (stargate's docs/presence.md: the server
// tracks a member with it as its key).  The same across the reconnects and
// the reloads of a tab, a new one in a new tab or a duplicated one: it
// leaves sessionStorage while the page lives, and goes back there when the
// page is hidden for good, where a reload finds it.
let currentTab = null;

export function tabId(storage = sessionStore()) {
  if (currentTab) return currentTab;
  let saved = null;
  try {
    saved = storage?.getItem("stargate.tab");
    storage?.removeItem("stargate.tab");
  } catch {
    saved = null;
  }
  currentTab = /^[0-9a-f]{32}$/.test(saved ?? "") ? saved : randomHex(16);
  window.addEventListener("pagehide", () => {
    try {
      storage?.setItem("stargate.tab", currentTab);
    } catch {
      // Refused: a reload then counts as a new tab.
    }
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) storage?.removeItem("stargate.tab"); // back from the cache
  });
  return currentTab;
}

function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (value) => value.toString(16).padStart(2, "0")).join("");
}

// Who is here: the members of a resource whose view follows its presence
// (stargate's follow_presence), kept from the presence messages of its
// socket or subscription.
//
//   const presence = new StargatePresence(subscription);
//   presence.addEventListener("change", () => show(presence.stats, presence.members));
//   presence.addEventListener("join", (e) => ...);   // e.detail: { id, user, data }
//   presence.addEventListener("leave", (e) => ...);
//   presence.addEventListener("sync", () => ...);    // the whole list, again
//
// `members` maps member ids to { user, data }; `stats` is { connections,
// users, guests }; `listed` is false past the server's limit (counts only).
// After a reconnect the server sends the whole list again: what changed
// meanwhile is reported as joins and leaves, so that what a page built
// from these events stays right.
export class StargatePresence extends EventTarget {
  constructor(stream) {
    super();
    this.members = new Map();
    this.stats = { connections: 0, users: 0, guests: 0 };
    this.listed = true;
    stream.addEventListener("message", (event) => this.receive(event.detail));
  }

  // Take a message if it is presence; say whether it was.
  receive(data) {
    if (typeof data !== "string" || !data.startsWith('{"type":"presence"')) return false;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return false;
    }
    this.stats = message.stats;
    if (message.sync) {
      const before = this.members;
      this.members = new Map(Object.entries(message.members ?? {}));
      this.listed = message.members !== null;
      for (const [id, member] of before) {
        if (!this.members.has(id)) this.tell("leave", id, member);
      }
      for (const [id, member] of this.members) {
        if (JSON.stringify(before.get(id)) !== JSON.stringify(member)) this.tell("join", id, member);
      }
      this.dispatchEvent(new CustomEvent("sync"));
    } else {
      for (const [id, member] of Object.entries(message.joins)) {
        this.members.set(id, member);
        this.tell("join", id, member);
      }
      for (const [id, member] of Object.entries(message.leaves)) {
        this.members.delete(id);
        this.tell("leave", id, member);
      }
    }
    this.dispatchEvent(new CustomEvent("change"));
    return true;
  }

  tell(kind, id, member) {
    this.dispatchEvent(new CustomEvent(kind, { detail: { id, ...member } }));
  }
}

// The home page: one WebSocket for every card (messages: see protocol.py).
// Each job card subscribes to its job over it, from the position the card
// was rendered at, and after every reconnect from the last message it got:
// no message is missed or shown twice, or the card says so and reloads the
// job.  Each card also says who is watching the job, in every tab and
// process (the server's presence of the job, followed by the subscription;
// this tab's id keeps it one watcher across reconnects and reloads).  The
// backstage card subscribes to the logged-in users' room: refused (4403)
// until the user logs in.
import { StargateConnection, StargatePresence, tabId } from "./stargate-client.js";

const LOG_LENGTH = 50;

// The session's CSRF token: every POST must carry it (Pyramid refuses it with
// 400 otherwise).
const CSRF_TOKEN = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function log(card, text, kind = "info") {
  const list = card.querySelector(".log");
  const item = document.createElement("li");
  item.dataset.kind = kind;
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  list.prepend(item);
  while (list.children.length > LOG_LENGTH) list.lastElementChild.remove();
}

function showState(card, state) {
  const label = card.querySelector(".state");
  label.textContent = state;
  label.dataset.state = state;
  card.querySelector(".toggle").textContent = state === "on" ? "Stop" : "Start";
}

// Return the server's message as an object, or null for anything else.
function parse(data) {
  if (typeof data !== "string") return null;
  try {
    const message = JSON.parse(data);
    return message && typeof message.type === "string" ? message : null;
  } catch {
    return null;
  }
}

function closeText({ code, reason, reconnecting, gaveUp }) {
  const why = reason ? `${code}: ${reason}` : `${code}`;
  if (gaveUp) {
    // Browsers hide why a handshake was refused: say what it usually is.
    return "cannot connect: the server refused every WebSocket of this page " +
      "(its address not in stargate.allowed_origins or allowed_hosts, or a " +
      "proxy that does not pass WebSocket upgrades?)";
  }
  return reconnecting ? `connection lost (${why})` : `connection closed (${why}), not reconnecting`;
}

async function post(url, fields) {
  return fetch(url, {
    method: "POST",
    headers: { "X-CSRF-Token": CSRF_TOKEN },
    body: new URLSearchParams(fields),
  });
}

// Read the job's state again, after the server said messages were missed.
async function reload(card) {
  try {
    const response = await fetch(card.dataset.url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const job = await response.json();
    showState(card, job.state);
  } catch (error) {
    log(card, `could not reload the job (${error.message})`, "error");
  }
}

// Show a subscription's status and ends on its card; return it.
function follow(card, subscription) {
  const status = card.querySelector(".status");
  subscription.addEventListener("status", (event) => {
    status.textContent = event.detail;
    status.dataset.status = event.detail;
  });
  subscription.addEventListener("close", (event) => {
    log(card, closeText(event.detail), event.detail.reconnecting ? "info" : "error");
  });
  return subscription;
}

// The card's chat form: a message to everyone who follows the same resource.
function chat(card, subscription) {
  card.querySelector(".say").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = card.querySelector(".message");
    const text = input.value.trim();
    if (!text) return;
    if (subscription.send(JSON.stringify({ type: "chat", text }))) input.value = "";
    else log(card, "not connected: the message was not sent", "error");
  });
}

const NAMES = new Intl.ListFormat("en", { style: "long", type: "conjunction" });

// "3 watching: alice, bob and 1 guest" (a guest per tab of one).
function showWatching(card, presence) {
  const { users, guests } = presence.stats;
  const names = [...new Set([...presence.members.values()].map((m) => m.user))]
    .filter((user) => user !== null)
    .map(String)
    .sort();
  if (guests) names.push(guests === 1 ? "1 guest" : `${guests} guests`);
  const line = card.querySelector(".watching");
  const count = users + guests;
  line.dataset.count = count;
  line.textContent = `${count} watching${presence.listed && names.length ? `: ${NAMES.format(names)}` : ""}`;
}

function watch(card, connection) {
  const jobId = card.dataset.job;
  // This tab's id (one watcher across reconnects), and who watches, asked.
  const path = `${card.dataset.url}?${new URLSearchParams({ tab: tabId(), presence: "1" })}`;
  const job = follow(card, connection.subscribe(path, { positions: true, since: card.dataset.since }));
  const presence = new StargatePresence(job);
  presence.addEventListener("change", () => showWatching(card, presence));
  job.addEventListener("resync", () => {
    log(card, "some messages were missed: the job was reloaded", "resync");
    reload(card);
  });
  job.addEventListener("message", (event) => {
    const message = parse(event.detail);
    if (message?.type === "state" && message.id === jobId) {
      showState(card, message.state);
      log(card, `state: ${message.state}`);
    } else if (message?.type === "chat" && message.id === jobId) {
      log(card, `${message.from}: ${message.text}`);
    } else if (message?.type === "error") {
      log(card, `refused: ${message.error}`, "error");
    }
  });

  card.querySelector(".toggle").addEventListener("click", async () => {
    const next = card.querySelector(".state").dataset.state === "on" ? "off" : "on";
    try {
      const response = await post(card.dataset.url, { state: next });
      if (!response.ok) log(card, `could not switch: HTTP ${response.status}`, "error");
    } catch {
      log(card, "could not switch: the server cannot be reached", "error");
    }
  });
  chat(card, job);
}

// Log in or out, then load the page again: its socket then carries the
// new session, and the backstage subscription is asked for with it.
// While one is under way, this page's own sockets closing with 4401 (its
// logout) are no reason to load it again before the answer.
let changingAccount = false;

function account(card, form, fields) {
  form?.addEventListener("submit", async (event) => {
    event.preventDefault();
    changingAccount = true;
    try {
      const response = await post(form.getAttribute("action"), fields(form));
      const answer = await response.json().catch(() => ({}));
      if (response.ok) {
        window.location.reload();
        return;
      }
      log(card, `refused: ${answer.error ?? `HTTP ${response.status}`}`, "error");
    } catch {
      log(card, "the server cannot be reached", "error");
    }
    changingAccount = false;
  });
}

function enterBackstage(card, connection) {
  const room = follow(card, connection.subscribe(card.dataset.url));
  room.addEventListener("close", (event) => {
    if (event.detail.code === 4403) log(card, "log in to enter the backstage", "info");
  });
  room.addEventListener("message", (event) => {
    const message = parse(event.detail);
    if (message?.type === "welcome") log(card, `welcome, ${message.name}`);
    else if (message?.type === "chat") log(card, `${message.from}: ${message.text}`);
    else if (message?.type === "error") log(card, `refused: ${message.error}`, "error");
  });
  chat(card, room);
  account(card, card.querySelector(".login"), (form) => ({ name: form.elements.name.value }));
  account(card, card.querySelector(".logout"), () => ({}));
}

const connection = new StargateConnection(document.querySelector(".jobs").dataset.socket);
// A logout in another tab or browser closes every socket of the user with
// 4401: load the page again, logged out.
connection.addEventListener("disconnect", (event) => {
  if (event.detail.code === 4401 && !changingAccount) window.location.reload();
});
document.querySelectorAll(".job").forEach((card) => watch(card, connection));
const backstage = document.querySelector(".backstage");
if (backstage) enterBackstage(backstage, connection);

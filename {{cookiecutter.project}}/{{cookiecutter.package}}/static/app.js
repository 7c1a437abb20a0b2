// The home page: one StargateSocket per job card (messages: see protocol.py).
// Each socket continues from the position the card was rendered at, and
// after every reconnect from the last message it got: no message is missed
// or shown twice, or the card says so and reloads the job.
import { StargateSocket } from "./stargate-client.js";

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

function closeText({ code, reason, reconnecting }) {
  const why = reason ? `${code}: ${reason}` : `${code}`;
  return reconnecting ? `connection lost (${why})` : `connection closed (${why}), not reconnecting`;
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

function watch(card) {
  const jobId = card.dataset.job;
  const socket = new StargateSocket(card.dataset.url, { positions: true, since: card.dataset.since });
  const status = card.querySelector(".status");

  socket.addEventListener("status", (event) => {
    status.textContent = event.detail;
    status.dataset.status = event.detail;
  });
  socket.addEventListener("resync", () => {
    log(card, "some messages were missed: the job was reloaded", "resync");
    reload(card);
  });
  socket.addEventListener("disconnect", (event) => {
    log(card, closeText(event.detail), event.detail.reconnecting ? "info" : "error");
  });
  socket.addEventListener("message", (event) => {
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
      const response = await fetch(card.dataset.url, {
        method: "POST",
        headers: { "X-CSRF-Token": CSRF_TOKEN },
        body: new URLSearchParams({ state: next }),
      });
      if (!response.ok) log(card, `could not switch: HTTP ${response.status}`, "error");
    } catch {
      log(card, "could not switch: the server cannot be reached", "error");
    }
  });

  card.querySelector(".say").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = card.querySelector(".message");
    const text = input.value.trim();
    if (!text) return;
    if (socket.send(JSON.stringify({ type: "chat", text }))) input.value = "";
    else log(card, "not connected: the message was not sent", "error");
  });
}

document.querySelectorAll(".job").forEach(watch);

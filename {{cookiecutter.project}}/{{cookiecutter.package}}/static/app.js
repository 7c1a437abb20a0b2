// The home page: one StargateSocket per job card.
import { StargateSocket } from "./stargate-client.js";

const LOG_LENGTH = 50;

function log(card, text) {
  const list = card.querySelector(".log");
  const item = document.createElement("li");
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

function stateMessage(data, jobId) {
  // The server sends {"id": ..., "state": ...} on connect and on every change;
  // anything else is a message someone sent to this job.
  if (typeof data !== "string") return null;
  try {
    const message = JSON.parse(data);
    if (message && message.id === jobId && typeof message.state === "string") return message;
  } catch {
    // not JSON: a chat message
  }
  return null;
}

function watch(card) {
  const jobId = card.dataset.job;
  const socket = new StargateSocket(card.dataset.url);
  const status = card.querySelector(".status");

  socket.addEventListener("status", (event) => {
    status.textContent = event.detail;
    status.dataset.status = event.detail;
  });
  socket.addEventListener("disconnect", (event) => log(card, `connection lost (${event.detail})`));
  socket.addEventListener("message", (event) => {
    const state = stateMessage(event.detail, jobId);
    if (state) {
      showState(card, state.state);
      log(card, `state: ${state.state}`);
    } else if (typeof event.detail === "string") {
      log(card, `message: ${event.detail}`);
    } else {
      log(card, `binary message of ${event.detail.byteLength} bytes`);
    }
  });

  card.querySelector(".toggle").addEventListener("click", async () => {
    const next = card.querySelector(".state").dataset.state === "on" ? "off" : "on";
    const response = await fetch(card.dataset.url, {
      method: "POST",
      body: new URLSearchParams({ state: next }),
    });
    if (!response.ok) log(card, `could not switch: HTTP ${response.status}`);
  });

  card.querySelector(".say").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = card.querySelector(".message");
    if (input.value && socket.send(input.value)) input.value = "";
    else if (input.value) log(card, "not connected: the message was not sent");
  });
}

document.querySelectorAll(".job").forEach(watch);

// lmlife chat page: streams replies from POST /v1/chat/completions (OpenAI-style SSE). Plain ES2020, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const el = {
  model: $("model"), system: $("system"), temperature: $("temperature"), maxTokens: $("max-tokens"),
  apiKey: $("api-key"), messages: $("messages"), notice: $("notice"), error: $("error"),
  form: $("composer"), input: $("input"), send: $("send"), stop: $("stop"), newChat: $("new-chat"),
};
const KEY_STORE = "lmlife.apiKey";

const server = { model: null, context: null, cap: null, generation: null };
let history = [];       // [{role, content, node}] — the conversation as shown (system prompt not included)
let controller = null;  // AbortController of the reply being streamed, null when idle

// ---- small view helpers --------------------------------------------------------------------------------------
function show(node, text) {  // a banner appearing shrinks #messages: stay at the bottom if we were there
  const stick = nearBottom();
  node.textContent = text;
  node.hidden = !text;
  if (stick) scrollDown();
}
const showError = (text) => show(el.error, text);

function setState(state) {
  const streaming = state === "streaming";
  document.body.dataset.state = state;
  el.send.disabled = streaming;
  el.stop.disabled = !streaming;
  el.messages.setAttribute("aria-busy", String(streaming));
}

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}
function scrollDown() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

// One turn: a label, the message text (its own element, text content = exactly the message) and a status line.
function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = `message ${role}`;
  body.textContent = text;
  const status = document.createElement("div");
  status.className = "status";
  turn.append(label, body, status);
  el.messages.append(turn);
  scrollDown();
  const entry = { role, content: text, node: body, turn, status };
  history.push(entry);
  return entry;
}

function setStatus(entry, status, text) {
  entry.turn.dataset.status = status;
  entry.node.dataset.status = status;
  entry.status.textContent = text;
}

function removeEntry(entry) {
  entry.turn.remove();
  history = history.filter((e) => e !== entry);
}

// ---- server info ---------------------------------------------------------------------------------------------
async function loadServerInfo() {
  try {
    const r = await fetch("/healthz");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const h = await r.json();
    server.model = h.model || null;
    server.context = Number.isFinite(h.context) ? h.context : null;
    server.cap = Number.isFinite(h.max_tokens_cap) ? h.max_tokens_cap : null;
    server.generation = h.generation || null;
  } catch (e) {
    el.model.textContent = "unavailable";
    showError(`Could not reach the server (${e.message}).`);
    return;
  }
  el.model.textContent = server.model || "unknown";
  const parts = [];
  if (server.context) parts.push(`${server.context}-token context`);
  if (server.cap) parts.push(`replies up to ${server.cap} tokens`);
  if (parts.length) el.model.title = parts.join(", ");
  if (server.cap) $("max-tokens-hint").textContent = `empty = server default (max ${server.cap})`;
  applyDefaults(server.generation);
}

// The server's generation defaults (conf/generation/: the settings the evaluation measured) start the settings,
// so that the page gives the same answer as the API and the terminal chat; fields the person edited are kept.
function applyDefaults(gen) {
  if (!gen) return;
  if (Number.isFinite(gen.temperature) && el.temperature.value.trim() === "") {
    el.temperature.value = String(gen.temperature);
    $("temperature-hint").textContent = `0 = greedy; server default ${gen.temperature}`;
  }
  if (gen.system_prompt && el.system.value.trim() === "") el.system.value = gen.system_prompt;
  $("system-hint").textContent = gen.system_prompt ? "the server's default" : "server default: none";
  if (Number.isFinite(gen.max_tokens)) el.maxTokens.placeholder = `server default (${gen.max_tokens})`;
}

// ---- request -------------------------------------------------------------------------------------------------
function buildRequest() {
  const body = { stream: true, messages: [] };
  if (el.temperature.value.trim() !== "") {  // empty: the server's default
    const temperature = Number(el.temperature.value);
    if (!Number.isFinite(temperature) || temperature < 0 || temperature > 2) {
      throw new Error("Temperature must be a number from 0 to 2.");
    }
    body.temperature = temperature;
  }
  if (server.model) body.model = server.model;
  const maxText = el.maxTokens.value.trim();
  if (maxText !== "") {
    const maxTokens = Number(maxText);
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error("Max tokens must be a whole number of at least 1.");
    body.max_tokens = maxTokens;
  }
  const system = el.system.value.trim();
  if (system) body.messages.push({ role: "system", content: system });
  for (const m of history) body.messages.push({ role: m.role, content: m.content });
  return body;
}

function headers() {
  const h = { "Content-Type": "application/json", Accept: "text/event-stream" };
  const key = el.apiKey.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorFromResponse(r) {
  let message = `${r.status} ${r.statusText}`.trim();
  try {
    const data = await r.json();
    const err = data && data.error;
    if (err && err.message) message = err.message + (err.param && !err.message.includes(err.param) ? ` (${err.param})` : "");
  } catch (_) { /* not JSON: keep the status line */ }
  if (r.status === 401) message += " — check the API key in Settings.";
  return `Server error: ${message}`;
}

function noteDropped(r, sentCount) {
  const dropped = parseInt(r.headers.get("X-Context-Dropped-Messages") || "0", 10);
  for (const m of history) m.turn.classList.remove("dropped");
  if (!(dropped > 0)) { show(el.notice, ""); return; }
  history.slice(0, Math.min(dropped, sentCount)).forEach((m) => m.turn.classList.add("dropped"));
  const ctx = server.context ? `${server.context}-token context` : "context";
  show(el.notice, dropped === 1
    ? `The oldest message no longer fits the model's ${ctx} and was left out.`
    : `The ${dropped} oldest messages no longer fit the model's ${ctx} and were left out.`);
}

// Reads an SSE body; calls onData(payload string) for every complete event's data. Events may span chunks.
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const flush = (final) => {
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = final ? "" : events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data && onData(data) === false) return false;
    }
    return true;
  };
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    if (!flush(done)) { reader.cancel().catch(() => {}); return; }
    if (done) return;
  }
}

// ---- sending -------------------------------------------------------------------------------------------------
async function send() {
  if (controller) return;
  const text = el.input.value.trim();
  if (!text) { el.input.focus(); return; }
  showError("");
  let request;
  try {
    history.push({ role: "user", content: text });  // validate with the new message included
    request = buildRequest();
  } catch (e) {
    showError(e.message);
    return;
  } finally {
    history.pop();
  }
  setState("streaming");
  controller = new AbortController();
  const signal = controller.signal;
  const user = addTurn("user", text);
  el.input.value = "";
  const reply = addTurn("assistant", "");
  setStatus(reply, "pending", "…");
  const textNode = reply.node.appendChild(document.createTextNode(""));
  let finish = null;
  let failure = null;

  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(request), signal,
    });
    if (!r.ok) { failure = await errorFromResponse(r); return; }
    noteDropped(r, history.length - 1);
    setStatus(reply, "streaming", "");
    await readEvents(r.body, (data) => {
      if (data === "[DONE]") return false;
      let chunk;
      try { chunk = JSON.parse(data); } catch (_) { return true; }
      if (chunk.error) {
        failure = `Server error: ${chunk.error.message || JSON.stringify(chunk.error)}`;
        return true;  // the server follows with [DONE]
      }
      const choice = (chunk.choices || [])[0];
      if (!choice) return true;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        const stick = nearBottom();
        textNode.appendData(piece);
        reply.content += piece;
        if (stick) scrollDown();
      }
      if (choice.finish_reason) finish = choice.finish_reason;
      return true;
    });
  } catch (e) {
    if (signal.aborted) finish = "stopped";
    else failure = `Network error: could not reach the server (${e.message}).`;
  } finally {
    controller = null;
    const stick = nearBottom();
    if (failure && !reply.content) {
      // Nothing came back: take the turn out again and give the text back to edit or resend.
      removeEntry(reply);
      removeEntry(user);
      if (!el.input.value) el.input.value = text;
    } else if (failure) {
      setStatus(reply, "error", "(interrupted)");
    } else if (finish === "stopped") {
      setStatus(reply, "stopped", "(stopped)");
    } else if (finish === "length") {
      setStatus(reply, "length", "(max tokens reached)");
    } else {
      setStatus(reply, "done", "");
    }
    if (failure) showError(failure);
    if (stick) scrollDown();
    setState("idle");
    el.input.focus();
  }
}

function stop() {
  if (controller) controller.abort();
}

function newChat() {
  stop();
  history = [];
  el.messages.replaceChildren();
  show(el.error, "");
  show(el.notice, "");
  el.input.value = "";
  el.input.focus();
}

// ---- wiring --------------------------------------------------------------------------------------------------
el.form.addEventListener("submit", (e) => { e.preventDefault(); send(); });
el.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
el.stop.addEventListener("click", stop);
el.newChat.addEventListener("click", newChat);
el.apiKey.value = sessionStorage.getItem(KEY_STORE) || "";
el.apiKey.addEventListener("input", () => {
  const key = el.apiKey.value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
});
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && controller) stop(); });

if (window.matchMedia("(max-width: 560px)").matches) document.querySelector(".settings").open = false;
setState("idle");
loadServerInfo();

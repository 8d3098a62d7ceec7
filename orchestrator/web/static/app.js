// The playground page: microphone -> WebSocket (16 kHz s16le, 20 ms frames) -> the agent;
// the agent's events and reply audio <- the same socket. Protocol: docs/WEB.md.
"use strict";

const FRAME_SAMPLES = 320;
const INPUT_RATE = 16000;
const MAX_EARLY_FRAMES = 50; // frames captured before the server is ready (1 s) are sent then

const $ = (id) => document.getElementById(id);

// Everything a test (or a curious user in the console) may want to read.
const agent = (window.voiceAgent = {
  state: "idle",
  sessionId: null,
  turns: [],
  errors: [],
  stats: { sentFrames: 0, receivedSamples: 0, playedSamples: 0, replies: 0, underruns: 0, stops: 0, reports: 0 },
  replies: [], // per reply: {rate, received, played, stopped}
});

let ctx = null;
let micStream = null;
let capture = null;
let playback = null;
let ws = null;
let ready = false;
let userStopped = false;
let early = [];
let sentSamples = 0;
let captureTimes = []; // [input sample position at the end of a frame, performance.now()]
let replyRate = 0;
let replyStarts = new Map(); // reply number -> performance.now() of its first audible sample
let turnItems = []; // one per FINAL, in order
let turnBase = 0; // turns before this connection (the server numbers each connection's turns from 1)

function setState(state, text) {
  agent.state = state;
  const pill = $("status");
  pill.dataset.state = state;
  pill.textContent = text || state;
}

function showBanner(message, reconnect) {
  $("banner-text").textContent = message;
  $("reconnect").hidden = !reconnect;
  $("banner").hidden = false;
  agent.errors.push(message);
}

function hideBanner() {
  $("banner").hidden = true;
}

function micErrorMessage(error) {
  if (!navigator.mediaDevices || error.name === "SecurityError") {
    return "Browsers give a page the microphone only over HTTPS or on localhost: start the server with --tls-cert/--tls-key.";
  }
  if (error.name === "NotAllowedError" || error.name === "PermissionDeniedError") {
    return "Microphone access was denied. Allow the microphone for this site (the icon in the address bar), then press Start talking again.";
  }
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return "No microphone was found. Plug one in, then press Start talking again.";
  }
  if (error.name === "NotReadableError") {
    return "The microphone is busy in another program. Close it, then press Start talking again.";
  }
  return `The microphone could not be opened (${error.name}: ${error.message}).`;
}

async function openAudio() {
  if (ctx) return;
  ctx = new AudioContext({ latencyHint: "interactive" });
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  await ctx.audioWorklet.addModule("/static/playback-worklet.js");
  playback = new AudioWorkletNode(ctx, "playback", { numberOfInputs: 0, outputChannelCount: [1] });
  playback.port.onmessage = (event) => onPlayback(event.data);
  playback.connect(ctx.destination);
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw Object.assign(new Error("no mediaDevices"), { name: "SecurityError" });
  }
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const source = ctx.createMediaStreamSource(micStream);
  capture = new AudioWorkletNode(ctx, "capture-16k", { numberOfOutputs: 0 });
  capture.port.onmessage = (event) => onFrame(event.data);
  source.connect(capture);
}

function closeMicrophone() {
  if (capture) capture.port.onmessage = null;
  if (micStream) micStream.getTracks().forEach((track) => track.stop());
  micStream = null;
  capture = null;
}

function onFrame({ pcm, peak }) {
  $("level").style.width = `${Math.min(100, Math.round(peak * 140))}%`;
  if (!ws || ws.readyState !== WebSocket.OPEN || userStopped) return;
  if (!ready) {
    early.push(pcm);
    if (early.length > MAX_EARLY_FRAMES) early.shift();
    return;
  }
  sendFrame(pcm);
}

function sendFrame(pcm) {
  ws.send(pcm);
  sentSamples += FRAME_SAMPLES;
  agent.stats.sentFrames += 1;
  captureTimes.push([sentSamples, performance.now()]);
  if (captureTimes.length > 30000) captureTimes.splice(0, 10000); // ~10 min kept
}

function captureTimeOf(sample) {
  // When the page captured input sample `sample` (its frame was posted as the frame filled up).
  for (const [end, t] of captureTimes) {
    if (end >= sample) return t - ((end - sample) * 1000) / INPUT_RATE;
  }
  return null;
}

function connect() {
  hideBanner();
  ready = false;
  early = [];
  sentSamples = 0;
  captureTimes = [];
  userStopped = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  setState("connecting", "connecting…");
  ws.onopen = () => {
    ws.send(
      JSON.stringify({
        type: "start",
        sample_rate_hz: INPUT_RATE,
        channels: 1,
        encoding: "s16le",
        frame_ms: 20,
        barge_in: $("barge-in").checked,
      }),
    );
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") onEvent(JSON.parse(event.data));
    else onAudio(event.data);
  };
  ws.onclose = (event) => {
    ready = false;
    $("stop").disabled = true;
    $("start").disabled = false;
    if (playback) playback.port.postMessage({ type: "stop" });
    if (userStopped && event.code === 1000) {
      setState("idle");
      return;
    }
    const reason = event.reason ? `: ${event.reason}` : "";
    const already = !$("banner").hidden;
    setState("disconnected");
    if (!already) showBanner(`Connection to the agent lost (code ${event.code}${reason}).`, true);
    else $("reconnect").hidden = false;
  };
}

function currentTurn() {
  return turnItems[turnItems.length - 1] || null;
}

function newTurn(transcript) {
  const node = $("turn-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".transcript").textContent = transcript;
  $("turns").appendChild(node);
  const turn = { node, transcript, reply: "", heard: null, bargeIn: false, waterfall: null, pageDeadAirMs: null };
  turnItems.push(turn);
  agent.turns.push(turn);
  node.scrollIntoView({ block: "end" });
  return turn;
}

function onEvent(m) {
  switch (m.type) {
    case "ready":
      ready = true;
      turnBase = turnItems.length;
      if (agent.sessionId && agent.sessionId !== m.session_id) {
        // Each socket is its own conversation: say so where the earlier turns end.
        const note = document.createElement("li");
        note.className = "divider";
        note.textContent = "new conversation: the agent does not remember the turns above";
        $("turns").appendChild(note);
      }
      agent.sessionId = m.session_id;
      $("session").textContent = `session ${m.session_id} · ${m.mode} · barge-in ${m.barge_in ? "on" : "off"}`;
      setState("listening", "listening");
      $("stop").disabled = false;
      for (const pcm of early) sendFrame(pcm);
      early = [];
      break;
    case "speech_started":
      if (agent.state !== "speaking") setState("hearing", "hearing you");
      break;
    case "interim":
    case "candidate":
      $("interim").textContent = m.text;
      break;
    case "retracted":
    case "discarded":
      break;
    case "final":
      $("interim").textContent = "";
      if (m.text) newTurn(m.text);
      if (agent.state === "hearing") setState("listening", "listening");
      break;
    case "reply": {
      const turn = currentTurn();
      if (!turn) break;
      turn.reply += m.text;
      turn.node.querySelector(".reply").textContent = turn.reply;
      break;
    }
    case "barge_in": {
      const turn = currentTurn();
      if (turn) {
        turn.bargeIn = true;
        turn.heard = m.heard;
        turn.node.querySelector(".cut").textContent = "(you interrupted)";
      }
      setState("hearing", "hearing you");
      break;
    }
    case "audio_start":
      replyRate = m.sample_rate_hz;
      agent.stats.replies += 1;
      agent.replies.push({ rate: replyRate, received: 0, played: 0, stopped: false, server: m.reply });
      playback.port.postMessage({ type: "start", rate: replyRate, reply: agent.stats.replies });
      setState("speaking", "agent speaking");
      break;
    case "audio_end":
      playback.port.postMessage({ type: "end" });
      break;
    case "audio_stop":
      agent.stats.stops += 1;
      playback.port.postMessage({ type: "stop" });
      break;
    case "turn":
      onTurn(m);
      break;
    case "error":
      onError(m);
      break;
    case "ended":
      setState("idle");
      break;
    default:
      break;
  }
}

function onAudio(buffer) {
  agent.stats.receivedSamples += buffer.byteLength / 2;
  const reply = agent.replies[agent.replies.length - 1];
  if (reply) reply.received += buffer.byteLength / 2;
  playback.port.postMessage({ type: "pcm", data: buffer }, [buffer]);
}

function onPlayback(m) {
  if (m.type === "started") {
    // The context time of that sample, mapped to the page clock at which it leaves the speaker.
    const stamp = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    let t = performance.now();
    if (stamp && stamp.performanceTime) t = stamp.performanceTime + (m.frame / ctx.sampleRate - stamp.contextTime) * 1000;
    replyStarts.set(m.reply, t);
  } else if (m.type === "progress" || m.type === "drained" || m.type === "stopped") {
    if (m.type === "progress") reportPlayed(m);
    agent.stats.underruns = m.underruns ?? agent.stats.underruns;
    if (m.type !== "progress" || m.played) agent.stats.lastPlayed = m.played;
    if (m.type === "drained" || m.type === "stopped") {
      agent.stats.playedSamples += m.played;
      const reply = agent.replies[m.reply - 1];
      if (reply) Object.assign(reply, { played: m.played, stopped: m.type === "stopped" });
      if (agent.state === "speaking") setState("listening", "listening");
    }
  }
  renderStats();
}

function reportPlayed(m) {
  // Tell the server how much of this reply has left the speaker: what the user heard at a barge-in.
  const reply = agent.replies[m.reply - 1];
  if (!reply || reply.server == null || !ws || ws.readyState !== WebSocket.OPEN || !ready) return;
  const latency = Math.round((ctx.outputLatency || 0) * reply.rate);
  ws.send(JSON.stringify({ type: "played", reply: reply.server, samples: Math.max(0, m.played - latency) }));
  agent.stats.reports += 1;
}

function renderStats() {
  const s = agent.stats;
  const played = replyRate ? (s.playedSamples / replyRate).toFixed(1) : "0.0";
  $("stats").textContent = `replies ${s.replies} · played ${played} s · underruns ${s.underruns}`;
}

function onTurn(m) {
  const turn = turnItems[turnBase + m.index - 1] || currentTurn() || newTurn(m.transcript);
  turn.reply = m.reply;
  turn.heard = m.heard_reply;
  turn.bargeIn = m.barge_in;
  turn.waterfall = m.waterfall;
  turn.traceId = m.trace_id;
  const replyNode = turn.node.querySelector(".reply");
  if (m.barge_in && m.reply.startsWith(m.heard_reply)) {
    replyNode.textContent = m.heard_reply;
    const rest = document.createElement("span");
    rest.className = "unheard";
    rest.textContent = m.reply.slice(m.heard_reply.length);
    replyNode.append(" ", rest);
  } else {
    replyNode.textContent = m.reply;
  }
  const start = replyStarts.get(agent.stats.replies);
  const spoken = m.speech_end_sample != null ? captureTimeOf(m.speech_end_sample) : null;
  if (start != null && spoken != null && m.waterfall.some((r) => r.key === "dead_air_ms" && r.ms != null)) {
    turn.pageDeadAirMs = Math.round(start - spoken);
  }
  renderWaterfall(turn, m);
}

function renderWaterfall(turn, m) {
  const box = turn.node.querySelector(".waterfall");
  const rows = box.querySelector(".rows");
  rows.textContent = "";
  const all = m.waterfall.slice();
  if (turn.pageDeadAirMs != null) all.push({ key: "page_dead_air_ms", label: "heard in page", ms: turn.pageDeadAirMs });
  const max = Math.max(1, ...all.map((r) => r.ms || 0));
  for (const r of all) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.key = r.key;
    const label = document.createElement("span");
    label.textContent = r.label;
    const track = document.createElement("span");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.display = "block";
    bar.style.width = r.ms == null ? "0" : `${Math.max(0, (100 * r.ms) / max)}%`;
    track.appendChild(bar);
    const ms = document.createElement("span");
    ms.className = "ms";
    ms.textContent = r.ms == null ? "–" : `${Math.round(r.ms)} ms`;
    row.append(label, track, ms);
    rows.appendChild(row);
  }
  const link = box.querySelector(".trace");
  if (!m.trace_id) {
    link.removeAttribute("href");
    link.textContent = "trace not recorded (the server set up no tracer provider)";
  } else if (m.trace_url) {
    link.href = m.trace_url;
    link.textContent = `trace ${m.trace_id.slice(0, 8)}… in Jaeger`;
  } else {
    link.removeAttribute("href");
    link.textContent = `trace ${m.trace_id.slice(0, 8)}… (not exported: set OTEL_EXPORTER_OTLP_ENDPOINT, see make jaeger)`;
  }
  box.hidden = false;
}

function onError(m) {
  setState("error", m.service ? `${m.service} down` : "error");
  const text = m.service ? `${m.service}: ${m.message}` : m.message;
  showBanner(text, true);
}

async function start() {
  $("start").disabled = true;
  $("hint").hidden = true;
  hideBanner();
  try {
    await openAudio();
    await ctx.resume();
    if (!micStream) await openMicrophone();
  } catch (error) {
    closeMicrophone();
    setState("error", "no microphone");
    showBanner(micErrorMessage(error), false);
    $("start").disabled = false;
    return;
  }
  connect();
}

function stop() {
  userStopped = true;
  $("stop").disabled = true;
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
  closeMicrophone();
  setState("finishing", "finishing the reply…");
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("reconnect").addEventListener("click", () => {
  $("reconnect").hidden = true;
  start();
});
renderStats();

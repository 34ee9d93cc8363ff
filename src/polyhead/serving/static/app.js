// The polyhead page: upload or record audio, call the API, draw what comes back.
// Plain JS, no libraries: the page must work on a machine without network access.
"use strict";

const MODEL_RATE = 16000;           // what the model eats; recordings are re-encoded at this rate
const VIEW_W = 1000, GUTTER = 90;   // timeline viewBox width and the label column inside it
const ROW_H = 22, ROW_GAP = 6, AXIS_H = 22;
const SPEAKER_COLOURS = ["#2f6fde", "#e07b39", "#3a9d5d", "#a24bcf", "#c8362f", "#1c9aa8", "#8a6d3b", "#d64f93"];
const TOP_LABELS = 5;

const $ = (id) => document.getElementById(id);
let recorder = null;

// --- talking to the server -------------------------------------------------------------------

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function post(path, files, fields = {}) {
  const form = new FormData();
  for (const [key, [blob, name]] of Object.entries(files)) form.append(key, blob, name);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  const response = await fetch(path, { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

function setStatus(text, state) {
  const el = $("status");
  el.textContent = text;
  el.className = state === "error" ? "error" : "";
  el.dataset.state = state;
}

// --- audio in the browser --------------------------------------------------------------------

// Decode anything the browser can play and re-encode it as 16-bit mono WAV at MODEL_RATE: the
// server reads WAV whatever codecs its libsndfile has, and MediaRecorder gives webm/ogg.
async function toWav(blob) {
  const context = new OfflineAudioContext(1, 1, MODEL_RATE);  // decodes straight to MODEL_RATE
  const audio = await context.decodeAudioData(await blob.arrayBuffer());
  const n = audio.length, channels = audio.numberOfChannels;
  const mono = new Float32Array(n);
  for (let c = 0; c < channels; c++) {
    const data = audio.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += data[i] / channels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const ascii = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  ascii(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, audio.sampleRate, true); view.setUint32(28, 2 * audio.sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  ascii(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) {
    const s = Math.max(-1, Math.min(1, mono[i]));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([view.buffer], { type: "audio/wav" });
}

async function toggleRecording() {
  const button = $("record");
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("this browser cannot record here (microphones need https or localhost)", "error");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus(`no microphone: ${e.message}`, "error");
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    button.textContent = "Record";
    button.classList.remove("recording");
    try {
      const wav = await toWav(new Blob(chunks, { type: chunks[0] ? chunks[0].type : "audio/webm" }));
      await analyse(wav, "recording.wav");
    } catch (e) {
      setStatus(`could not use the recording: ${e.message}`, "error");
    }
  };
  recorder.start();
  button.textContent = "Stop";
  button.classList.add("recording");
  setStatus("recording… press Stop when done", "recording");
}

// --- analysis --------------------------------------------------------------------------------

// The translation is asked for only where the model can translate (the option is shown then).
function analyzeFields() {
  return !$("translate-option").hidden && $("translate").checked ? { translate: "true" } : {};
}

async function analyse(blob, name) {
  const player = $("player");
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  const started = performance.now();
  setStatus("analysing…", "busy");
  try {
    let result;
    try {
      result = await post("/v1/audio/analyze", { file: [blob, name] }, analyzeFields());
    } catch (e) {
      if (e.status !== 400 || !/readable/.test(e.message)) throw e;
      blob = await toWav(blob);  // a codec the server lacks but the browser has
      name = name.replace(/\.[^.]*$/, "") + ".wav";
      result = await post("/v1/audio/analyze", { file: [blob, name] }, analyzeFields());
    }
    showAnalysis(result);
    let speakers = null;
    if ($("speakers").checked) {
      setStatus("finding speakers…", "busy");
      speakers = await post("/v1/audio/diarize", { file: [blob, name] });
    }
    drawTimeline(result, speakers);
    setStatus(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`, "done");
  } catch (e) {
    setStatus(e.message, "error");
  }
}

function showAnalysis(result) {
  $("results").hidden = false;
  const transcript = $("transcript");
  transcript.replaceChildren();
  if (result.text) {
    transcript.textContent = result.text;
  } else {
    const empty = document.createElement("span");
    empty.className = "empty";
    empty.textContent = "(no words recognised)";
    transcript.append(empty);
  }
  $("translation-block").hidden = result.translation === undefined;
  $("translation").textContent = result.translation || "";
  $("translation-from").textContent = result.translation_from ? `from ${result.translation_from}` : "";
  $("confidence").textContent = result.confidence != null ? `confidence ${result.confidence.toFixed(2)}` : "";
  $("duration").textContent = `${result.duration.toFixed(2)} s`;
  showProbabilities($("language"), result.language_probs, result.language);
  // Every other classifier head (intent, gender, ...) answers as "<target>" + "<target>_probs".
  const labels = $("labels");
  labels.replaceChildren();
  for (const key of Object.keys(result)) {
    if (!key.endsWith("_probs") || key === "language_probs") continue;
    const target = key.slice(0, -"_probs".length);
    const block = document.createElement("div");
    const title = document.createElement("h3");
    title.textContent = target[0].toUpperCase() + target.slice(1);
    block.append(title);
    showProbabilities(block, result[key], result[target]);
    labels.append(block);
  }
}

function showProbabilities(container, probs, best) {
  container.querySelectorAll(".bar, .muted").forEach((el) => el.remove());
  if (!probs) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "this model has no such head";
    container.append(none);
    return;
  }
  for (const [label, p] of Object.entries(probs).slice(0, TOP_LABELS)) {
    const row = document.createElement("div");
    row.className = "bar" + (label === best ? " top" : "");
    row.dataset.label = label;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="num"></span>';
    row.querySelector(".name").textContent = label;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".fill").style.display = "block";
    row.querySelector(".num").textContent = `${(100 * p).toFixed(1)}%`;
    container.append(row);
  }
}

// --- the timeline ----------------------------------------------------------------------------

function svg(tag, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

function niceStep(duration) {
  const raw = duration / 8;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
}

// Rows: speech (VAD segments), words, then one row per speaker when diarised; axis below.
function drawTimeline(result, speakers) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  const duration = Math.max(result.duration, 0.01);
  const x = (t) => GUTTER + (VIEW_W - GUTTER - 10) * Math.min(t, duration) / duration;
  const speakerNames = speakers ? speakers.speakers : [];
  const rows = ["speech", "words", ...speakerNames];
  const height = rows.length * (ROW_H + ROW_GAP) + AXIS_H;
  timeline.setAttribute("viewBox", `0 0 ${VIEW_W} ${height}`);
  const rowY = (i) => ROW_GAP / 2 + i * (ROW_H + ROW_GAP);
  const span = (parent, cls, start, end, row, colour, title) => {
    const rect = svg("rect", { class: cls, x: x(start), y: rowY(row), width: Math.max(x(end) - x(start), 1.5),
      height: ROW_H, rx: 3, fill: colour }, parent);
    svg("title", {}, rect).textContent = title;
  };
  rows.forEach((name, i) => {
    svg("rect", { x: GUTTER, y: rowY(i), width: VIEW_W - GUTTER - 10, height: ROW_H, fill: "#eef0f5" }, timeline);
    svg("text", { x: 4, y: rowY(i) + ROW_H * 0.7 }, timeline).textContent = name;
  });
  for (const s of result.segments || []) {
    span(timeline, "segment", s.start, s.end, 0, "#7a8699", `speech ${s.start.toFixed(2)}–${s.end.toFixed(2)} s`);
  }
  for (const w of result.words || []) {
    span(timeline, "word", w.start, w.end, 1, "#9fb7e8", `${w.word} ${w.start.toFixed(2)}–${w.end.toFixed(2)} s`);
  }
  (speakers ? speakers.segments : []).forEach((s) => {
    const row = 2 + speakerNames.indexOf(s.speaker);
    const colour = SPEAKER_COLOURS[(row - 2) % SPEAKER_COLOURS.length];
    span(timeline, "speaker-segment", s.start, s.end, row, colour, `${s.speaker}: ${s.text || "(no words)"}`);
  });
  const axisY = rows.length * (ROW_H + ROW_GAP) + 4;
  svg("line", { x1: GUTTER, x2: VIEW_W - 10, y1: axisY, y2: axisY, stroke: "#9aa1b1" }, timeline);
  const step = niceStep(duration);
  for (let t = 0; t <= duration + 1e-9; t += step) {
    svg("line", { class: "tick", x1: x(t), x2: x(t), y1: axisY, y2: axisY + 4, stroke: "#9aa1b1" }, timeline);
    svg("text", { x: x(t) - 6, y: axisY + 16 }, timeline).textContent = `${+t.toFixed(2)}s`;
  }
  // Clicking the timeline plays from that moment.
  timeline.onclick = (e) => {
    const box = timeline.getBoundingClientRect();
    const vx = (e.clientX - box.left) * VIEW_W / box.width;
    if (vx < GUTTER) return;
    const player = $("player");
    player.currentTime = (vx - GUTTER) / (VIEW_W - GUTTER - 10) * duration;
    player.play().catch(() => {});
  };
}

// --- verification ----------------------------------------------------------------------------

async function verify() {
  const out = $("verify-result");
  const a = $("verify-a").files[0], b = $("verify-b").files[0];
  if (!a || !b) { out.innerHTML = '<p class="error">choose two files</p>'; return; }
  out.textContent = "comparing…";
  try {
    const r = await post("/v1/speakers/verify", { file_a: [a, a.name], file_b: [b, b.name] });
    out.innerHTML = '<p class="decision"></p><div class="bar"><span class="name">score</span>' +
      '<span class="track"><span class="fill"></span></span><span class="num"></span></div><p class="muted"></p>';
    out.querySelector(".decision").textContent = r.same_speaker ? "Same speaker" : "Different speakers";
    out.querySelector(".fill").style.cssText = `display:block;width:${(100 * Math.max(0, r.score)).toFixed(1)}%`;
    out.querySelector(".num").textContent = r.score.toFixed(3);
    out.querySelector(".muted").textContent = `cosine score; the threshold ${r.threshold} is the dev set's equal-error point`;
    out.dataset.score = r.score;
  } catch (e) {
    out.innerHTML = "";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = e.message;
    out.append(p);
  }
}

// --- wiring ----------------------------------------------------------------------------------

async function init() {
  try {
    const health = await (await fetch("/health")).json();
    $("auth").hidden = !health.auth;
    $("translate-option").hidden = !health.translates;
    $("model").textContent = `model ${health.model} · heads: ${health.tasks.join(", ")}`;
  } catch (e) {
    setStatus(`server unreachable: ${e.message}`, "error");
  }
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) analyse(file, file.name);
  });
  $("record").addEventListener("click", toggleRecording);
  $("verify").addEventListener("click", verify);
  document.body.dataset.ready = "1";
}

init();

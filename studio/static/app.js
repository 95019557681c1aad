// latentzoo studio page: plain JS over /api/v1 (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const ROLES = ["encoder", "conditioner", "prior", "decoder", "sampler", "scheduler"];
const TEXT_OPTIONS = new Set(["prompt", "negative_prompt"]);
const state = { token: sessionStorage.getItem("latentzoo-token") || "", pipelines: {}, jobs: new Map(), overrides: {}, image: null };

// The token comes from the URL fragment (#token=...), which the browser never sends to the server.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  state.token = fragment.get("token");
  sessionStorage.setItem("latentzoo-token", state.token);
  history.replaceState(null, "", location.pathname);
}

function say(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(options.json); }
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
  if (response.status === 401) { $("token-form").hidden = false; $("token").focus(); }
  return { status: response.status, ok: response.ok, body };
}

// -- pipelines, composer and option widgets ---------------------------------------------------

async function loadPipelines() {
  const r = await api("/api/v1/pipelines");
  if (!r.ok) { say(r.body ? r.body.error + " — " + r.body.fix : "cannot reach the server"); return; }
  const select = $("pipeline");
  select.innerHTML = "";
  for (const p of r.body.pipelines) {
    state.pipelines[p.name] = p;
    select.add(new Option(p.name + (p.composes.ok ? "" : " (does not compose)"), p.name));
  }
  await pipelineChanged();
}

async function pipelineChanged() {
  const p = state.pipelines[$("pipeline").value];
  if (!p) return;
  state.overrides = {};
  $("pipeline-description").textContent = p.description || "";
  $("text-fields").hidden = !p.text;
  for (const option of $("command").options) option.disabled = option.value !== "sample" && !p.editable;
  if ($("command").selectedOptions[0].disabled) $("command").value = "sample";
  renderOptions(p);
  commandChanged();
  await compose();
}

async function compose() {
  const body = Object.assign({ pipeline: $("pipeline").value }, state.overrides);
  const r = await api("/api/v1/compose", { method: "POST", json: body });
  if (!r.body || !r.body.alternatives) { $("compose-reason").textContent = r.body ? r.body.error : ""; return; }
  $("compose-reason").textContent = r.ok ? "" : r.body.error + (r.body.fix ? " — " + r.body.fix : "");
  $("run").disabled = !r.ok;
  const box = $("part-selects");
  box.innerHTML = "";
  for (const role of ROLES) {
    const rows = r.body.alternatives[role] || [];
    const current = r.body.parts[role];
    if (!rows.length && !current) continue;
    const label = document.createElement("label");
    label.textContent = role + " ";
    const select = document.createElement("select");
    select.id = "part-" + role;
    select.dataset.role = role;
    if (!current) select.add(new Option("(none)", ""));
    const refused = [];
    for (const row of rows) {
      const option = new Option(row.ok ? row.name : row.name + " — does not fit", row.name);
      if (!row.ok && row.name !== current) { option.disabled = true; option.title = row.reason; refused.push(row); }
      select.add(option);
    }
    select.value = current || "";
    select.addEventListener("change", () => { state.overrides[role] = select.value || undefined; compose(); });
    label.appendChild(select);
    box.appendChild(label);
    if (refused.length) {
      const details = document.createElement("details");
      details.className = "reasons-box";
      const summary = document.createElement("summary");
      summary.className = "help";
      summary.textContent = refused.length + " " + role + "(s) do not fit: why";
      const list = document.createElement("ul");
      list.className = "reasons";
      for (const row of refused) {
        const item = document.createElement("li");
        item.textContent = row.name + ": " + row.reason;
        list.appendChild(item);
      }
      details.append(summary, list);
      box.appendChild(details);
    }
  }
}

function parseRange(range) {
  const out = {};
  if (!range) return out;
  if (range.startsWith("{")) { out.choices = range.replace(/ or null$/, "").slice(1, -1).split(","); return out; }
  const m = range.match(/^([[(])\s*([^,]+),\s*([^\])]+)[\])]/);
  if (m) {
    if (m[2] !== "-inf") out.min = m[2];
    if (m[3] !== "inf") out.max = m[3];
  }
  return out;
}

function renderOptions(p) {
  const top = $("option-widgets");
  top.innerHTML = "";
  const more = document.createElement("details");
  more.id = "more-options";
  const summary = document.createElement("summary");
  const box = document.createElement("div");
  box.className = "option-grid";
  let count = 0;
  for (const o of p.options) {
    if (TEXT_OPTIONS.has(o.name)) continue;
    const label = document.createElement("label");
    label.title = o.help || "";
    label.textContent = o.name + (o.part ? " (" + o.role + ")" : "") + " ";
    const range = parseRange(o.range);
    let input;
    if (range.choices) {
      input = document.createElement("select");
      for (const c of range.choices) input.add(new Option(c, c));
    } else if (o.type === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = !!o.default;
    } else {
      input = document.createElement("input");
      input.type = o.type === "str" ? "text" : "number";
      if (o.type === "float") input.step = "any";
      if (range.min !== undefined) input.min = range.min;
      if (range.max !== undefined) input.max = range.max;
    }
    if (o.type !== "bool") input.value = o.default === null || o.default === undefined ? "" : String(o.default);
    if (o.name === "steps" && (o.default === null || o.default === undefined)) input.value = "50";
    input.id = "opt-" + o.name;
    input.dataset.name = o.name;
    input.dataset.type = o.type;
    input.dataset.default = o.type === "bool" ? String(!!o.default) : input.value;
    label.appendChild(input);
    const help = document.createElement("span");
    help.className = "help";
    help.textContent = " " + (o.range || "");
    label.appendChild(help);
    if (o.name === "steps") top.appendChild(label);
    else { box.appendChild(label); count += 1; }
  }
  summary.textContent = "Options of the parts (" + count + ")";
  more.append(summary, box);
  if (count) top.appendChild(more);
}

function optionValues() {
  const options = {};
  let steps;
  for (const input of $("option-widgets").querySelectorAll("[data-name]")) {
    const raw = input.type === "checkbox" ? String(input.checked) : input.value;
    if (input.dataset.name === "steps") { steps = Number(raw); continue; }
    if (raw === input.dataset.default || raw === "") continue;
    const t = input.dataset.type;
    options[input.dataset.name] = t === "int" ? parseInt(raw, 10) : t === "float" ? Number(raw) : t === "bool" ? raw === "true" : raw;
  }
  return { options, steps };
}

// -- images and the mask brush ------------------------------------------------------------------

function commandChanged() {
  const c = $("command").value;
  $("image-fields").hidden = c === "sample";
  $("mask-tools").hidden = c !== "inpaint";
  $("strength-label").hidden = c !== "img2img";
  $("second-image").hidden = c !== "interpolate" && c !== "variations";
  $("n").disabled = c === "img2img" || c === "inpaint";
}

const mask = document.createElement("canvas");
mask.width = mask.height = 256;
const maskCtx = mask.getContext("2d");
function clearMask() { maskCtx.fillStyle = "#000"; maskCtx.fillRect(0, 0, 256, 256); drawMask(); }

function drawMask() {
  const ctx = $("mask-canvas").getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#333";
  ctx.fillRect(0, 0, 256, 256);
  if (state.image) ctx.drawImage(state.image, 0, 0, 256, 256);
  ctx.globalAlpha = 0.5;
  ctx.globalCompositeOperation = "lighter";
  const red = document.createElement("canvas");
  red.width = red.height = 256;
  const rc = red.getContext("2d");
  rc.drawImage(mask, 0, 0);
  rc.globalCompositeOperation = "multiply";
  rc.fillStyle = "#f00";
  rc.fillRect(0, 0, 256, 256);
  ctx.drawImage(red, 0, 0);
  ctx.globalAlpha = 1;
  ctx.globalCompositeOperation = "source-over";
}

function paint(event) {
  const rect = $("mask-canvas").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * 256, y = ((event.clientY - rect.top) / rect.height) * 256;
  maskCtx.fillStyle = "#fff";
  maskCtx.beginPath();
  maskCtx.arc(x, y, Number($("brush").value) * 2, 0, Math.PI * 2);
  maskCtx.fill();
  drawMask();
}

function setupMask() {
  const canvas = $("mask-canvas");
  let down = false;
  canvas.addEventListener("pointerdown", (e) => { down = true; canvas.setPointerCapture(e.pointerId); paint(e); });
  canvas.addEventListener("pointermove", (e) => { if (down) paint(e); });
  canvas.addEventListener("pointerup", () => { down = false; });
  $("mask-clear").addEventListener("click", clearMask);
  $("mask-half").addEventListener("click", () => { maskCtx.fillStyle = "#fff"; maskCtx.fillRect(0, 0, 256, 128); drawMask(); });
  $("image-file").addEventListener("change", async () => {
    const file = $("image-file").files[0];
    if (!file) return;
    state.image = await createImageBitmap(file);
    drawMask();
  });
  clearMask();
}

async function upload(blob) {
  const r = await api("/api/v1/uploads", { method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" } });
  if (!r.ok) throw new Error(r.body ? r.body.error + " — " + r.body.fix : "upload failed");
  return r.body.upload_id;
}

function maskBlob() {
  // The mask at the input image's own size (nearest), white = repaint.
  const w = state.image ? state.image.width : 256, h = state.image ? state.image.height : 256;
  const out = document.createElement("canvas");
  out.width = w; out.height = h;
  const ctx = out.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(mask, 0, 0, w, h);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

// -- jobs: submit, queue, progress, gallery ------------------------------------------------------

async function submitJob(event) {
  event.preventDefault();
  const command = $("command").value;
  const { options, steps } = optionValues();
  const body = Object.assign({ command, pipeline: $("pipeline").value, seed: Number($("seed").value) }, state.overrides);
  if (steps) body.steps = steps;
  if (Object.keys(options).length) body.options = options;
  if (command === "sample" || command === "variations") body.n = Number($("n").value);
  if (command === "interpolate") body.frames = Math.max(2, Number($("n").value));
  if (!$("text-fields").hidden) {
    if ($("prompt").value) body.prompt = $("prompt").value;
    if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
  }
  try {
    if (command !== "sample") {
      const files = [$("image-file").files[0], $("image-file-2").files[0]].filter(Boolean);
      if (!files.length) { say("choose an input image first"); return; }
      body.images = [];
      for (const f of files) body.images.push(await upload(f));
      if (command === "img2img") body.strength = Number($("strength").value);
      if (command === "inpaint") body.mask = await upload(await maskBlob());
      if (command === "img2img" || command === "inpaint" || command === "interpolate") body.fit = true;
    }
  } catch (err) { say(err.message); return; }
  const r = await api("/api/v1/jobs", { method: "POST", json: body });
  if (!r.ok) { say(r.body ? r.body.error + " — " + r.body.fix : "the server refused the job"); return; }
  say("queued " + r.body.job_id.slice(0, 8));
  upsertJob({ job_id: r.body.job_id, status: "queued", progress: { step: 0, total: 0 }, request: body });
}

function upsertJob(job) {
  const known = state.jobs.get(job.job_id) || {};
  const merged = Object.assign(known, job);
  state.jobs.set(job.job_id, merged);
  renderJob(merged);
  return merged;
}

function renderJob(job) {
  let item = document.getElementById("job-" + job.job_id);
  if (!item) {
    item = document.createElement("li");
    item.id = "job-" + job.job_id;
    item.innerHTML = '<span class="job-title"></span><button type="button" class="cancel">Cancel</button><progress max="1" value="0"></progress><span class="job-status"></span><span class="job-error"></span>';
    item.querySelector(".cancel").addEventListener("click", () => cancelJob(job.job_id));
    $("queue").prepend(item);
  }
  const r = job.request || {};
  item.querySelector(".job-title").textContent = (r.command || "sample") + " " + (r.pipeline || "") + " · " + job.job_id.slice(0, 8);
  const bar = item.querySelector("progress");
  const p = job.progress || { step: 0, total: 0 };
  bar.max = Math.max(p.total, 1);
  bar.value = job.status === "done" ? bar.max : p.step;
  bar.setAttribute("aria-label", "progress of job " + job.job_id.slice(0, 8));
  item.querySelector(".job-status").textContent = job.status + (p.total ? " · step " + p.step + "/" + p.total : "");
  item.dataset.status = job.status;
  item.querySelector(".cancel").hidden = !(job.status === "queued" || job.status === "running");
  item.querySelector(".job-error").textContent = job.error ? job.error.error + " — " + job.error.fix : "";
}

async function cancelJob(id) {
  const r = await api("/api/v1/jobs/" + id, { method: "DELETE" });
  say(r.ok ? "cancelling " + id.slice(0, 8) : r.body.error);
}

async function refreshJob(id) {
  const r = await api("/api/v1/jobs/" + id);
  if (!r.ok) return;
  const job = upsertJob(r.body);
  if (job.status === "done") addToGallery(job);
}

function addToGallery(job) {
  for (const out of job.outputs || []) {
    if (out.kind !== "image" || document.querySelector('#gallery [data-url="' + out.url + '"]')) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.url = out.url;
    button.setAttribute("aria-label", "image " + out.index + " of job " + job.job_id.slice(0, 8) + ": open its record");
    const img = document.createElement("img");
    img.alt = "output " + out.index + " of job " + job.job_id.slice(0, 8);
    img.src = out.url;
    if (state.token) { // images need the token too: fetch them as blobs
      img.removeAttribute("src");
      api.raw(out.url).then((blob) => { img.src = URL.createObjectURL(blob); });
    }
    button.appendChild(img);
    button.addEventListener("click", () => openRecord(job, out.index));
    $("gallery").prepend(button);
  }
}

api.raw = async (path) => (await fetch(path, { headers: state.token ? { Authorization: "Bearer " + state.token } : {} })).blob();

function openRecord(job, index) {
  $("record-title").textContent = "Image " + index + " of job " + job.job_id.slice(0, 8);
  $("cli-command").textContent = job.cli;
  $("cli-file").textContent = "writes this image to out/" + String(index).padStart(4, "0") + ".png" +
    ((job.request || {}).images ? "; uploads are named by their ids (sha256), so give those files those names" : "");
  $("record-json").textContent = JSON.stringify(job.record, null, 2);
  $("record-dialog").showModal();
}

function connectEvents() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws";
  const ws = state.token ? new WebSocket(url, ["bearer", state.token]) : new WebSocket(url);
  ws.onmessage = (message) => {
    const e = JSON.parse(message.data);
    if (e.type === "progress") upsertJob({ job_id: e.job_id, status: "running", progress: { step: e.step, total: e.total } });
    else if (e.type === "started") upsertJob({ job_id: e.job_id, status: "running" });
    else if (e.type === "cancelled") upsertJob({ job_id: e.job_id, status: "cancelled" });
    else if (e.type === "queued" && !state.jobs.has(e.job_id)) refreshJob(e.job_id);
    else if (e.type === "completed" || e.type === "failed") refreshJob(e.job_id);
  };
  ws.onclose = () => setTimeout(connectEvents, 2000);
}

async function loadJobs() {
  const r = await api("/api/v1/jobs?limit=50");
  if (!r.ok) return;
  for (const job of r.body.jobs.reverse()) {
    upsertJob(job);
    if (job.status === "done") addToGallery(job);
  }
}

function start() {
  $("pipeline").addEventListener("change", pipelineChanged);
  $("command").addEventListener("change", commandChanged);
  $("job-form").addEventListener("submit", submitJob);
  $("copy-cli").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("cli-command").textContent); say("copied the CLI command"); }
    catch (err) { say("select the command and copy it: " + err.message); }
  });
  $("close-record").addEventListener("click", () => $("record-dialog").close());
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("latentzoo-token", state.token);
    $("token-form").hidden = true;
    loadPipelines(); loadJobs(); connectEvents();
  });
  setupMask();
  loadPipelines();
  loadJobs();
  connectEvents();
}

start();

// The infinistar page: submit jobs, watch the queue, play the results. Plain JS, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("infinistar-token") || "";
const shown = new Set();  // gallery items already drawn

async function api(path, options = {}) {
  options.headers = Object.assign({}, options.headers, token ? { Authorization: "Bearer " + token } : {});
  const response = await fetch(path, options);
  if (response.status === 401) {
    token = prompt("This server needs its access token:") || "";
    sessionStorage.setItem("infinistar-token", token);
    if (token) return api(path, options);
  }
  return response;
}

async function errorText(response) {
  try { const body = await response.json(); const e = body.error || {};
        return (e.param ? e.param + ": " : "") + (e.message || response.statusText); }
  catch (_) { return response.statusText; }
}

function number(id) { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); }

async function submit(fields, file) {
  $("error").textContent = "";
  const image = fields.mode === "t2i";
  delete fields.mode;
  for (const key of Object.keys(fields)) if (fields[key] === undefined || fields[key] === "") delete fields[key];
  let response;
  if (image) {
    delete fields.seconds;
    response = await api("/v1/images/generations", { method: "POST", headers: { "Content-Type": "application/json" },
                                                      body: JSON.stringify(Object.assign(fields, { response_format: "url" })) });
  } else if (file) {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    form.append("input_reference", file);
    response = await api("/v1/videos", { method: "POST", body: form });
  } else {
    response = await api("/v1/videos", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(fields) });
  }
  if (!response.ok) $("error").textContent = await errorText(response);
  refresh();
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("input").files[0];
  const fields = { mode: $("mode").value, prompt: $("prompt").value, model: $("model").value || undefined,
                   seconds: number("seconds"), seed: number("seed"), cfg: number("cfg"),
                   negative_prompt: $("negative").value };
  // The images endpoint answers when the image is done: do not wait for it here.
  submit(fields, file);
  setTimeout(refresh, 300);
});

async function mediaUrl(job) {
  if (!token) return job.content_url;
  const response = await api(job.content_url);
  return URL.createObjectURL(await response.blob());
}

function jobRow(job) {
  const row = document.createElement("div");
  row.className = "job"; row.dataset.id = job.id;
  const text = document.createElement("span");
  text.textContent = `${job.mode} · ${job.prompt || "(no prompt)"} · seed ${job.seed}`;
  const bar = document.createElement("progress");
  bar.max = 100; bar.value = job.progress;
  const status = document.createElement("span");
  status.className = "muted";
  status.textContent = job.status === "queued" ? `queued #${job.queue_position || ""}` :
    `${job.stage || job.status}${job.eta_seconds != null ? " · " + Math.round(job.eta_seconds) + " s" : ""}`;
  const cancel = document.createElement("button");
  cancel.textContent = "cancel";
  cancel.onclick = async () => { await api(`/v1/videos/${job.id}`, { method: "DELETE" }); refresh(); };
  row.append(text, bar, status, cancel);
  return row;
}

async function galleryItem(job) {
  const item = document.createElement("div");
  item.className = "item"; item.dataset.id = job.id;
  const title = document.createElement("div");
  title.textContent = `${job.prompt || "(no prompt)"} — seed ${job.seed}`;
  item.append(title);
  if (job.status === "completed") {
    const url = await mediaUrl(job);
    const media = document.createElement(job.mode === "t2i" ? "img" : "video");
    media.src = url;
    if (job.mode !== "t2i") { media.controls = true; media.loop = true; media.muted = true; media.autoplay = true; }
    const link = document.createElement("a");
    link.href = url; link.download = `${job.id}${job.mode === "t2i" ? ".png" : ".mp4"}`; link.textContent = "download";
    const rerun = document.createElement("button");
    rerun.textContent = "re-run with this seed";
    rerun.onclick = () => submit({ mode: job.mode === "t2i" ? "t2i" : "t2v", prompt: job.prompt, model: job.model,
                                   seed: job.seed, cfg: job.metadata.cfg,
                                   negative_prompt: job.metadata.negative_prompt }, undefined);
    const meta = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `metadata (${job.size}, ${job.seconds ? job.seconds + " s, " : ""}${job.model})`;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(job.metadata, null, 1);
    meta.append(summary, pre);
    const actions = document.createElement("div");
    actions.append(link, " ", rerun);
    item.append(media, actions, meta);
  } else {
    const why = document.createElement("p");
    why.className = "muted";
    why.textContent = job.status + (job.error ? ": " + job.error.message : "");
    item.append(why);
  }
  return item;
}

let busy = false;  // whether jobs are queued or running: then the page asks more often

async function refresh() {
  const response = await api("/v1/videos?limit=50");
  if (!response.ok) return;
  const jobs = (await response.json()).data;
  busy = jobs.some((job) => job.status === "queued" || job.status === "in_progress");
  const active = jobs.filter((job) => job.status === "queued" || job.status === "in_progress").reverse();
  $("queue").replaceChildren(...(active.length ? active.map(jobRow) : [Object.assign(document.createElement("p"),
                                 { className: "muted", textContent: "nothing running" })]));
  for (const job of jobs.slice().reverse()) {
    if (shown.has(job.id) || !["completed", "failed", "cancelled"].includes(job.status)) continue;
    shown.add(job.id);
    $("gallery").prepend(await galleryItem(job));
  }
}

async function start() {
  const response = await api("/v1/models");
  if (response.ok) {
    for (const model of (await response.json()).data) {
      const option = new Option(model.id + (model.loaded ? " (loaded)" : ""), model.id, false, model.default);
      $("model").append(option);
    }
  }
  const tick = async () => { try { await refresh(); } finally { setTimeout(tick, busy ? 250 : 1500); } };
  tick();
}
start();

// The try-it page: each photo becomes a job of the HTTP API (docs/api.md): POST /v1/jobs, the presigned
// upload (with progress), then GET /v1/jobs/{id} until it ends; a finished photo shows a before/after slider.
// config.json (written beside the page) says where the API is and how to sign: "sigv4" or "jwt" (OIDC login).

import { sigv4Headers } from "./sigv4.js";

const $ = (selector, root = document) => root.querySelector(selector);
const STATES = {
  AWAITING_UPLOAD: "uploading", ACCEPTED: "checking", QUEUED: "queued", RUNNING: "running",
  SUCCEEDED: "done", FAILED: "failed", REJECTED: "refused", CANCELLED: "cancelled", SUPERSEDED: "replaced",
};
const CANCELLABLE = new Set(["AWAITING_UPLOAD", "ACCEPTED", "QUEUED"]);
const POLL_MS = [500, 1000, 1000, 2000, 3000];
let config;
let credentials = null;
let bearer = null;

function say(text) { $("#message").textContent = text; }

async function api(method, path, body) {
  const url = new URL(path, config.api_url || window.location.origin).href;
  const text = body === undefined ? "" : JSON.stringify(body);
  const headers = { "Content-Type": "application/json" };
  if (config.auth === "jwt") {
    headers.Authorization = `Bearer ${bearer}`;
  } else {
    Object.assign(headers, await sigv4Headers({ method, url, body: text, region: config.region, credentials }));
  }
  const response = await fetch(url, { method, headers, body: text || undefined, credentials: "omit" });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || data.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// --- signing in ------------------------------------------------------------------------------------
function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function oidcEndpoints() {
  const response = await fetch(new URL(".well-known/openid-configuration", config.oidc.issuer.replace(/\/?$/, "/")));
  return response.json();
}

async function oidcSignIn() {
  const endpoints = await oidcEndpoints();
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256",
    new TextEncoder().encode(verifier))));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem("oidc", JSON.stringify({ verifier, state }));
  const target = new URL(endpoints.authorization_endpoint);
  Object.entries({ response_type: "code", client_id: config.oidc.client_id, redirect_uri: redirectUri(),
    scope: config.oidc.scope || "openid", state, code_challenge: challenge, code_challenge_method: "S256" })
    .forEach(([k, v]) => target.searchParams.set(k, v));
  window.location.assign(target.href);
}

function redirectUri() { return window.location.origin + window.location.pathname; }

async function oidcCallback() {
  const params = new URLSearchParams(window.location.search);
  const pending = JSON.parse(sessionStorage.getItem("oidc") || "null");
  if (!params.get("code") || !pending) return;
  history.replaceState(null, "", redirectUri());
  sessionStorage.removeItem("oidc");
  if (params.get("state") !== pending.state) throw new Error("The sign-in answer does not match this tab's request.");
  const endpoints = await oidcEndpoints();
  const response = await fetch(endpoints.token_endpoint, {
    method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", client_id: config.oidc.client_id,
      code: params.get("code"), redirect_uri: redirectUri(), code_verifier: pending.verifier }),
  });
  const tokens = await response.json();
  if (!response.ok) throw new Error(tokens.error_description || tokens.error || "The sign-in failed.");
  sessionStorage.setItem("token", tokens.access_token || tokens.id_token);
}

async function signIn() {
  if (config.auth === "jwt") {
    await oidcCallback();
    bearer = sessionStorage.getItem("token");
    if (bearer) return true;
    $("#oidc-signin").hidden = false;
    $("#oidc-signin").addEventListener("click", () => oidcSignIn().catch((e) => say(e.message)));
    return false;
  }
  credentials = config.credentials || JSON.parse(sessionStorage.getItem("credentials") || "null");
  if (credentials) return true;
  const form = $("#credentials-form");
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const entered = Object.fromEntries(new FormData(form));
    if (!entered.sessionToken) delete entered.sessionToken;
    sessionStorage.setItem("credentials", JSON.stringify(entered));
    window.location.reload();
  });
  return false;
}

// --- options, from the API's own OpenAPI document (one list of models and bounds) -------------------
function choices(schema) { return (schema.anyOf || [schema]).find((s) => s.type && s.type !== "null") || {}; }

async function loadOptions() {
  const document_ = await api("GET", "/v1/openapi.json");
  const props = document_.components.schemas.OptionsIn.properties;
  const model = $("#model");
  for (const name of choices(props.model).enum) model.add(new Option(name, name, name === "animevideov3"));
  for (const name of choices(props.format).enum) $("#format").add(new Option(name, name));
  Object.assign($("#scale"), { min: choices(props.scale).minimum, max: choices(props.scale).maximum });
  Object.assign($("#strength"), { min: choices(props.strength).minimum, max: choices(props.strength).maximum });
  $("#strength").addEventListener("input", () => { $("#strength-value").value = $("#strength").value; });
}

function chosenOptions() {
  const options = { model: $("#model").value, scale: Number($("#scale").value),
    strength: Number($("#strength").value) };
  if ($("#format").value) options.format = $("#format").value;
  return options;
}

// --- one photo -------------------------------------------------------------------------------------
function show(item, state, detail = "") {
  item.dataset.state = state;
  $(".state", item).textContent = detail ? `${STATES[state] || state}: ${detail}` : (STATES[state] || state);
  $(".cancel", item).hidden = !CANCELLABLE.has(state);
}

function upload(form, file, progress) {
  return new Promise((resolve, reject) => {
    const body = new FormData();
    Object.entries(form.fields).forEach(([k, v]) => body.append(k, v));
    body.append("file", file);  // last: S3 ignores fields after the file
    const request = new XMLHttpRequest();
    request.open("POST", form.url);
    request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) progress(e.loaded / e.total); });
    request.addEventListener("load", () => (request.status < 300 ? resolve()
      : reject(new Error(`the upload was refused (${request.status})`))));
    request.addEventListener("error", () => reject(new Error("the upload failed")));
    request.send(body);
  });
}

function finished(item, job, file) {
  const figure = $(".compare", item);
  $(".before", figure).src = URL.createObjectURL(file);
  $(".before", figure).alt = `${file.name}, before`;
  $(".after", figure).src = job.result.url;
  $(".after", figure).alt = `${file.name}, upscaled ${job.options.scale}x (${job.result.width} x ${job.result.height})`;
  $(".download", figure).href = job.result.url;
  const split = $(".split", figure);
  const move = () => $(".frame", figure).style.setProperty("--split", `${split.value}%`);
  split.addEventListener("input", move);
  move();
  figure.hidden = false;
}

async function follow(item, job, file) {
  const progress = $("progress", item);
  for (let i = 0; ; i += 1) {
    show(item, job.state, job.error ? job.error.message : "");
    if (job.state === "SUCCEEDED") {
      progress.value = 100;
      finished(item, job, file);
      return;
    }
    if (!CANCELLABLE.has(job.state) && job.state !== "RUNNING") {
      progress.hidden = true;
      return;
    }
    if (job.state === "RUNNING") progress.removeAttribute("value");  // no tile progress: indeterminate
    await new Promise((r) => setTimeout(r, POLL_MS[Math.min(i, POLL_MS.length - 1)]));
    job = await api("GET", `/v1/jobs/${job.job_id}`);
  }
}

async function submit(file) {
  const item = $("#job-template").content.firstElementChild.cloneNode(true);
  $(".name", item).textContent = file.name;
  $("#jobs").prepend(item);
  const progress = $("progress", item);
  show(item, "AWAITING_UPLOAD");
  try {
    const created = await api("POST", "/v1/jobs", { filename: file.name, size: file.size,
      content_type: file.type || "application/octet-stream", options: chosenOptions() });
    item.dataset.jobId = created.job_id;
    $(".cancel", item).addEventListener("click", async () => {
      try { show(item, (await api("DELETE", `/v1/jobs/${created.job_id}`)).state); } catch (e) { say(e.message); }
    });
    await upload(created.upload, file, (done) => {
      progress.value = Math.round(done * 100);
      show(item, "AWAITING_UPLOAD", `${progress.value}%`);
    });
    progress.value = 0;
    await follow(item, await api("GET", `/v1/jobs/${created.job_id}`), file);
  } catch (error) {
    item.dataset.state = "error";
    $(".state", item).textContent = error.message;
    progress.hidden = true;
  }
}

function accept(files) { Array.from(files).forEach((file) => submit(file)); }

function wireDropZone() {
  const drop = $("#drop");
  const input = $("#files");
  drop.addEventListener("click", (e) => { if (e.target !== input) input.click(); });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { accept(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach((n) => drop.addEventListener(n, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((n) => drop.addEventListener(n, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => { e.preventDefault(); accept(e.dataTransfer.files); });
}

async function main() {
  config = await (await fetch("config.json", { cache: "no-store" })).json();
  if (!(await signIn())) {
    $("#signin").hidden = false;
    return;
  }
  await loadOptions();
  wireDropZone();
  $("#workspace").hidden = false;
  document.body.dataset.ready = "true";
}

main().catch((error) => say(error.message));

"""The web page served at ``/``: upload, image with boxes, confidence slider, lesion table, JSON download.

One self-contained HTML document (no external assets, so it works offline). It calls ``POST
/v1/detect?preview=true`` once per upload; the slider only filters the boxes and rows already received.
Boxes are SVG rectangles over the preview image in the original image's pixel coordinates (the SVG's
``viewBox``), so they need no rescaling. When the server needs an API key (401), a key field appears; the key
is kept for the browser tab (sessionStorage) and sent as ``X-API-Key``. ``PAGE_CSP`` allows only this page's
own script (by its hash), its inline styles, ``data:`` images and requests to the same origin.
"""

import base64
import hashlib
import re

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mammodet: breast lesion detection (research use only)</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #eef0f3;
         color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; align-items: baseline;
           gap: 16px; flex-wrap: wrap; }
  header h1 { font-size: 20px; margin: 0; }
  header span { color: #b8c0cc; font-size: 13px; }
  #notice { background: #fff3cd; color: #5c4400; border-bottom: 2px solid #e0a800; padding: 8px 20px;
            font-weight: 600; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 400px; gap: 16px; padding: 16px; }
  @media (max-width: 900px) { main { grid-template-columns: 1fr; } }
  .panel { background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 3px rgba(0, 0, 0, .15); }
  form { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
  button { background: #2457c5; color: #fff; border: 0; border-radius: 5px; padding: 7px 16px; font-size: 14px;
           cursor: pointer; }
  #status { margin: 10px 0; min-height: 1.3em; }
  #status.error { color: #b00020; font-weight: 600; }
  #image { width: 100%; height: 74vh; background: #000; display: block; border-radius: 4px; }
  #image text { font-weight: 700; paint-order: stroke; stroke: #000; }
  label[for=threshold] { font-weight: 600; }
  #threshold { width: 100%; margin: 8px 0 4px; }
  #counts { color: #555; font-size: 13px; margin: 4px 0 10px; }
  #table-box { max-height: 58vh; overflow-y: auto; border: 1px solid #e3e6ea; border-radius: 4px; }
  table { width: 100%; border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
  th { background: #f6f7f9; position: sticky; top: 0; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
  #download { display: inline-block; margin-top: 12px; }
  #download[hidden] { display: none; }
  .legend span { margin-right: 12px; font-size: 13px; }
</style>
</head>
<body>
<header><h1>mammodet</h1><span>breast lesion detection</span><span id="model">loading model&hellip;</span></header>
<div id="notice" role="note">Research use only &mdash; not for clinical use. This is not a medical device; its output
  must not be used for diagnosis or treatment.</div>
<main>
  <section class="panel">
    <form id="upload">
      <input type="file" id="file" name="file"
             accept=".dcm,.dicom,.png,.jpg,.jpeg,application/dicom,image/png,image/jpeg">
      <button type="submit">Detect</button>
      <input type="password" id="apikey" placeholder="API key" autocomplete="off" hidden>
      <span class="legend"><span><i class="swatch" style="background:#ffd400"></i>calcification</span><span><i
        class="swatch" style="background:#00c8ff"></i>mass_low</span><span><i class="swatch"
        style="background:#ff3b3b"></i>mass_high</span></span>
    </form>
    <p id="status" role="status">Choose a DICOM, PNG or JPEG mammogram.</p>
    <svg id="image" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet"></svg>
  </section>
  <aside class="panel">
    <label for="threshold">Confidence &ge; <output id="threshold-value">0.30</output></label>
    <input type="range" id="threshold" min="0" max="1" step="0.01" value="0.3">
    <p id="counts">No image analysed yet.</p>
    <div id="table-box">
      <table id="lesions">
        <thead><tr><th>#</th><th>Class</th><th>Score</th><th>Box x0, y0, x1, y1 (px)</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <a id="download" download="detections.json" hidden>Download JSON</a>
  </aside>
</main>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = { calcification: "#ffd400", mass_low: "#00c8ff", mass_high: "#ff3b3b" };
const $ = (id) => document.getElementById(id);
let result = null;

function authHeaders() {
  const key = sessionStorage.getItem("mammodet-api-key") || $("apikey").value;
  return key ? { "X-API-Key": key } : {};
}

function askForKey() {
  $("apikey").hidden = false;
  setStatus("This server needs an API key: enter it, then choose the file again.", true);
}

$("apikey").addEventListener("change", () => {
  sessionStorage.setItem("mammodet-api-key", $("apikey").value);
  loadModel();
});

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function render() {
  const threshold = parseFloat($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const svg = $("image");
  const rows = $("lesions").tBodies[0];
  svg.replaceChildren();
  rows.replaceChildren();
  if (!result) return;
  const { width, height } = result.image;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.append(svgElement("image", { href: result.preview, x: 0, y: 0, width, height }));
  const font = Math.max(width, height) / 40;
  const shown = result.detections.map((d, i) => ({ ...d, n: i + 1 })).filter((d) => d.score >= threshold);
  for (const d of shown) {
    const [x0, y0, x1, y1] = d.box;
    const color = COLORS[d.label] || "#ffffff";
    const rect = svgElement("rect", {
      class: "box", "data-label": d.label, x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: "none",
      stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke",
    });
    const title = svgElement("title", {});
    title.textContent = `${d.n} ${d.label} ${d.score.toFixed(3)}`;
    rect.append(title);
    const text = svgElement("text", {
      x: x0, y: y0 > font ? y0 - font * 0.25 : y1 + font, fill: color, "font-size": font,
      "stroke-width": font / 8,
    });
    text.textContent = d.n;  // the row number in the table, which has the class and score
    svg.append(rect, text);
    const row = rows.insertRow();
    row.insertCell().textContent = d.n;
    const swatch = document.createElement("i");
    swatch.className = "swatch";
    swatch.style.background = color;
    const name = row.insertCell();
    name.append(swatch, d.label);
    row.insertCell().textContent = d.score.toFixed(3);
    row.insertCell().textContent = d.box.map((v) => v.toFixed(0)).join(", ");
  }
  $("counts").textContent = `${shown.length} of ${result.detections.length} detections shown ` +
    `(image ${width} x ${height} px)`;
}

function offerDownload() {
  const { preview, ...plain } = result;
  const blob = new Blob([JSON.stringify(plain, null, 2)], { type: "application/json" });
  const link = $("download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.hidden = false;
}

async function detect(file) {
  setStatus("Analysing\\u2026", false);
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await fetch("/v1/detect?preview=true", { method: "POST", body, headers: authHeaders() });
    const answer = await response.json();
    if (response.status === 401) {
      result = null;
      askForKey();
    } else if (!response.ok) {
      const message = answer.error ? answer.error.message : response.statusText;
      result = null;
      $("download").hidden = true;
      $("counts").textContent = "No image analysed.";
      setStatus(`Error ${response.status}: ${message}`, true);
    } else {
      result = answer;
      offerDownload();
      setStatus(`${answer.detections.length} detections; move the slider to filter them.`, false);
    }
  } catch (error) {
    setStatus(`Request failed: ${error}`, true);
  }
  render();
}

$("threshold").addEventListener("input", render);
$("file").addEventListener("change", () => { if ($("file").files.length) detect($("file").files[0]); });
$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("file").files.length) detect($("file").files[0]); else setStatus("Choose a file first.", true);
});
async function loadModel() {
  const response = await fetch("/v1/model", { headers: authHeaders() });
  if (response.status === 401) return askForKey();
  const model = await response.json();
  $("model").textContent = `model ${model.version} (${model.arch})`;
  $("threshold").value = model.thresholds.display_score;
  render();
}
loadModel();
</script>
</body>
</html>
"""

_SCRIPT = re.search(r"<script>(.*?)</script>", INDEX_HTML, re.S).group(1)
PAGE_CSP = (
    "default-src 'none'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()}'; "
    "style-src 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: its one inline script by hash, nothing from elsewhere, never framed."""

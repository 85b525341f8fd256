// The digit page: draw on the pad, or choose, drop or paste an image; the service classifies it.
//
// Every image goes to two endpoints at once: POST /classify for the answer and POST /normalized for the
// 28x28 image the model saw. Both run the same normalisation on the same bytes, so the preview is what
// was classified. No framework and nothing fetched from elsewhere: the service serves this file.
"use strict";

const ENDPOINTS = { classify: "/classify", normalized: "/normalized", model: "/model" };
const NUM_CLASSES = 10;
// Light ink on black, as MNIST digits are; the service accepts either polarity.
const PAPER = "#000000";
const INK = "#ffffff";
// On the 280 px pad a digit drawn to fill it is about 200 px tall; MNIST strokes are 2 to 3 pixels in a
// 20 pixel box, which is 20 to 30 px here.
const PEN_WIDTH = 22;

const page = {
  pad: document.getElementById("pad"),
  classifyButton: document.getElementById("classify"),
  clearButton: document.getElementById("clear"),
  fileInput: document.getElementById("file"),
  dropzone: document.getElementById("dropzone"),
  status: document.getElementById("status"),
  error: document.getElementById("error"),
  result: document.getElementById("result"),
  digit: document.getElementById("digit"),
  confidence: document.getElementById("confidence"),
  sent: document.getElementById("sent"),
  preview: document.getElementById("preview"),
  bars: document.getElementById("bars"),
  modelInfo: document.getElementById("model-info"),
};

// --- the drawing pad -------------------------------------------------------------------------------

const pen = page.pad.getContext("2d");
let lastPoint = null; // where the pen is while it touches the pad, in canvas pixels

function clearPad() {
  pen.fillStyle = PAPER;
  pen.fillRect(0, 0, page.pad.width, page.pad.height);
}

function padPoint(event) {
  // Pointer positions are in CSS pixels; the pad's CSS size follows the viewport, its bitmap does not.
  const box = page.pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * page.pad.width) / box.width,
    y: ((event.clientY - box.top) * page.pad.height) / box.height,
  };
}

function strokeTo(point) {
  pen.strokeStyle = INK;
  pen.lineWidth = PEN_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(lastPoint.x, lastPoint.y);
  pen.lineTo(point.x, point.y);
  pen.stroke();
  lastPoint = point;
}

page.pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  page.pad.setPointerCapture(event.pointerId);
  lastPoint = padPoint(event);
  strokeTo(lastPoint); // a dot, so a tap leaves a mark
});

page.pad.addEventListener("pointermove", (event) => {
  if (lastPoint === null) return;
  // Coalesced events are the moves the browser merged into this one: a pen or a fast mouse sends many.
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of moves.length ? moves : [event]) strokeTo(padPoint(move));
});

for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  page.pad.addEventListener(type, () => { lastPoint = null; });
}

function padBlob() {
  return new Promise((resolve, reject) => {
    page.pad.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("The drawing could not be saved as PNG."))), "image/png");
  });
}

// --- talking to the service ------------------------------------------------------------------------

class ShownError extends Error {} // an error whose message is written for the person using the page

async function post(url, blob, filename) {
  const form = new FormData();
  form.append("image", blob, filename);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (error) {
    throw new ShownError(
      `The service could not be reached, so nothing was classified. Check that it is running and try again. (${error.message})`
    );
  }
  if (!response.ok) throw await explain(response);
  return response;
}

async function explain(response) {
  // The service answers a 4xx with {"error": sentence, "reason": label}; show the sentence as it is.
  let sentence = "";
  try {
    const body = await response.json();
    sentence = (body && (body.error || body.detail)) || "";
  } catch (_) {
    // not JSON: a proxy's or the server's own error page
  }
  const code = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
  if (response.status >= 500) {
    return new ShownError(
      `The service failed while handling this image (${code}). ${sentence} Try again in a moment.`.replace(/\s+/g, " ").trim()
    );
  }
  return new ShownError(sentence ? sentence : `The service refused this image (${code}).`);
}

let sentUrl = null;
let previewUrl = null;

function showImage(img, blob, oldUrl) {
  if (oldUrl) URL.revokeObjectURL(oldUrl);
  const url = URL.createObjectURL(blob);
  img.src = url;
  return url;
}

// `source` names the image in the status line: "Your drawing", or the file's name.
async function classify(blob, filename, source) {
  setBusy(true);
  showError(null);
  page.status.textContent = "Classifying…";
  try {
    const answerRequest = post(ENDPOINTS.classify, blob, filename);
    const previewRequest = post(ENDPOINTS.normalized, blob, filename);
    previewRequest.catch(() => {}); // its failure is reported below, once the answer's has been
    const answer = await (await answerRequest).json();
    const preview = await (await previewRequest).blob();
    sentUrl = showImage(page.sent, blob, sentUrl);
    previewUrl = showImage(page.preview, preview, previewUrl);
    showAnswer(answer, source);
  } catch (error) {
    showError(error instanceof ShownError ? error.message : `Something went wrong in this page: ${error.message}`);
  } finally {
    setBusy(false);
    bringIntoView();
  }
}

function bringIntoView() {
  // On a phone the answer is below the pad; scroll to it unless its heading is already in view.
  const heading = document.getElementById("result-heading");
  const top = heading.getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight * 0.5) heading.scrollIntoView({ block: "start" });
}

// --- showing the answer ----------------------------------------------------------------------------

function percent(probability) {
  return `${(probability * 100).toFixed(1)} %`;
}

function showAnswer(answer, source) {
  page.digit.textContent = String(answer.digit);
  page.confidence.textContent = percent(answer.confidence);
  page.bars.replaceChildren(
    ...answer.probabilities.slice(0, NUM_CLASSES).map((probability, digit) => {
      const row = document.createElement("li");
      row.className = digit === answer.digit ? "bar predicted" : "bar";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = String(digit);
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = percent(probability);
      row.append(label, track, value);
      return row;
    })
  );
  page.result.hidden = false;
  page.status.textContent = `${source}: the model reads ${answer.digit}, with ${percent(answer.confidence)} confidence.`;
}

function showError(message) {
  page.error.hidden = message === null;
  page.error.textContent = message || "";
  if (message !== null) {
    page.result.hidden = true; // an old answer next to a new error would read as this image's answer
    page.status.textContent = "Nothing was classified.";
  }
}

function setBusy(busy) {
  page.classifyButton.disabled = busy;
  page.fileInput.disabled = busy;
  page.result.setAttribute("aria-busy", String(busy));
}

// --- the controls ----------------------------------------------------------------------------------

page.classifyButton.addEventListener("click", async () => {
  let blob;
  try {
    blob = await padBlob();
  } catch (error) {
    showError(error.message);
    return;
  }
  await classify(blob, "drawing.png", "Your drawing");
});

page.clearButton.addEventListener("click", () => {
  clearPad();
  showError(null);
  page.result.hidden = true;
  page.status.textContent = "Draw a digit, then press “Classify drawing”.";
});

page.fileInput.addEventListener("change", () => {
  const file = page.fileInput.files[0];
  page.fileInput.value = ""; // so choosing the same file again still counts as a change
  if (file) classify(file, file.name, file.name);
});

page.dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  page.dropzone.classList.add("dragging");
});
page.dropzone.addEventListener("dragleave", () => page.dropzone.classList.remove("dragging"));
page.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  page.dropzone.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) classify(file, file.name, file.name);
  else showError("Drop an image file here: what was dropped holds no file.");
});

document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData ? event.clipboardData.files : [])][0];
  if (!file) {
    showError("The clipboard holds no image to classify. Copy an image, then paste again.");
    return;
  }
  event.preventDefault();
  classify(file, file.name || "pasted-image", "The pasted image");
});

// --- the model's name in the footer ----------------------------------------------------------------

async function showModelInfo() {
  try {
    const response = await fetch(ENDPOINTS.model);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const model = await response.json();
    const accuracy = typeof model.test_accuracy === "number" ? `, test accuracy ${percent(model.test_accuracy)}` : "";
    page.modelInfo.textContent = `Model ${model.tag}${accuracy}, running on ${model.device}.`;
  } catch (error) {
    page.modelInfo.textContent = `Model information is unavailable (${error.message}).`;
  }
}

clearPad();
showModelInfo();

// Wires the page: key, model list, file panel, microphone panel. No framework, no build step.

import { ApiFailure, key } from "./api.js";
import { FilePanel } from "./file.js";
import { MicPanel } from "./mic.js";
import { fillLanguages, fillSelect, loadModels, renderModels } from "./models.js";

const $ = (id) => document.getElementById(id);

/** Show an error as a sentence, with the server's own words after it; null hides it. */
function showError(element, error) {
  if (!error) {
    element.hidden = true;
    element.textContent = "";
    return;
  }
  const failure = error instanceof ApiFailure ? error : new ApiFailure(String(error.message || error));
  element.textContent = failure.detail ? `${failure.message} (${failure.detail})` : failure.message;
  element.hidden = false;
}

new FilePanel({
  form: $("file-form"), dropZone: $("drop-zone"), fileInput: $("file-input"), fileName: $("file-name"),
  model: $("file-model"), language: $("file-language"), format: $("file-format"), words: $("file-words"),
  submit: $("file-submit"), upload: $("upload-progress"), work: $("work-progress"), status: $("file-status"),
  error: $("file-error"), player: $("player"), transcript: $("transcript"), raw: $("raw-output"),
  downloads: $("downloads"),
}, showError);

new MicPanel({
  model: $("mic-model"), protocol: $("mic-protocol"), language: $("mic-language"), start: $("mic-start"), stop: $("mic-stop"),
  status: $("mic-status"), error: $("mic-error"), finals: $("mic-finals"), partial: $("mic-partial"),
}, showError);

async function refreshModels() {
  showError($("key-error"), null);
  $("key-status").textContent = "Loading models…";
  try {
    const models = await loadModels();
    renderModels(models, $("models-body"));
    $("models-table").hidden = false;
    $("models-empty").hidden = true;
    fillSelect($("file-model"), models.filter((m) => m.stage === "transcribe" || m.stage === "realtime"));
    fillSelect($("mic-model"), models.filter((m) => m.stage === "realtime"));
    fillLanguages($("language-codes"), models);
    const up = models.filter((m) => m.available !== false).length;
    $("key-status").textContent = `Key accepted: ${models.length} model(s), ${up} available.`;
  } catch (error) {
    $("key-status").textContent = "";
    $("models-table").hidden = true;
    $("models-empty").hidden = false;
    showError($("key-error"), error);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) {
    showError($("key-error"), new ApiFailure("Paste a key first."));
    return;
  }
  key.set(value);
  $("key-input").value = "";  // kept in sessionStorage only, not left in the field
  refreshModels();
});

$("key-forget").addEventListener("click", () => {
  key.clear();
  $("key-status").textContent = "Key forgotten.";
  $("models-table").hidden = true;
  $("models-empty").hidden = false;
});

if (key.get()) refreshModels();

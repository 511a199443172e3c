// File transcription: pick or drop a file, upload it with progress, stream the text as it is decoded.

import { ApiFailure, postForm, sseEvents } from "./api.js";
import { TranscriptView } from "./transcript.js";

const STREAMABLE = new Set(["json", "text", "verbose_json"]);  // the formats stream=true supports
const MEDIA = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt", json: "application/json" };

export class FilePanel {
  constructor(ui, showError) {
    this.ui = ui;
    this.showError = showError;
    this.view = new TranscriptView(ui.transcript, ui.player);
    this.file = null;
    this.result = null;  // {request, text, verbose, raw: {format: body}}
    this.busy = false;
    this.bindInputs();
  }

  bindInputs() {
    const { ui } = this;
    ui.fileInput.addEventListener("change", () => ui.fileInput.files[0] && this.choose(ui.fileInput.files[0]));
    for (const type of ["dragenter", "dragover"]) {
      ui.dropZone.addEventListener(type, (e) => { e.preventDefault(); ui.dropZone.classList.add("dragging"); });
    }
    for (const type of ["dragleave", "drop"]) {
      ui.dropZone.addEventListener(type, () => ui.dropZone.classList.remove("dragging"));
    }
    ui.dropZone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files[0]) this.choose(e.dataTransfer.files[0]);
    });
    const syncWords = () => {
      ui.words.disabled = ui.format.value !== "verbose_json";
    };
    ui.format.addEventListener("change", syncWords);
    syncWords();
    ui.form.addEventListener("submit", (e) => { e.preventDefault(); this.run(); });
    for (const button of ui.downloads.querySelectorAll("button")) {
      button.addEventListener("click", () => this.download(button.dataset.format));
    }
  }

  choose(file) {
    this.file = file;
    const { ui } = this;
    ui.fileName.textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KiB)`;
    if (ui.player.src) URL.revokeObjectURL(ui.player.src);
    ui.player.src = URL.createObjectURL(file);
    ui.player.hidden = false;
  }

  /** The multipart form every client would send; the page adds nothing private. */
  form(request, format, stream) {
    const form = new FormData();
    form.append("model", request.model);
    if (request.language) form.append("language", request.language);
    form.append("response_format", format);
    if (format === "verbose_json") {
      form.append("timestamp_granularities[]", "segment");
      if (request.words) form.append("timestamp_granularities[]", "word");
    }
    if (stream) form.append("stream", "true");
    form.append("file", request.file, request.file.name);
    return form;
  }

  async run() {
    const { ui } = this;
    if (this.busy) return;
    this.showError(ui.error, null);
    if (!this.file) {
      this.showError(ui.error, new ApiFailure("Choose an audio file first."));
      return;
    }
    if (!ui.model.value) {
      this.showError(ui.error, new ApiFailure("No transcription model is listed here: enter a key, or use a server "
                                              + "that runs one."));
      return;
    }
    const request = { file: this.file, model: ui.model.value, language: ui.language.value.trim().toLowerCase(),
                      format: ui.format.value, words: ui.words.checked && !ui.words.disabled };
    const stream = STREAMABLE.has(request.format);
    this.busy = true;
    ui.submit.disabled = true;
    ui.downloads.hidden = true;
    ui.raw.hidden = true;
    this.view.clear();
    ui.upload.value = 0;
    ui.work.value = 0;
    const started = performance.now();
    const duration = () => (Number.isFinite(ui.player.duration) ? ui.player.duration : 0);
    let seen = 0;
    let text = "";
    let verbose = null;
    let uploaded = false;
    let failure = null;  // an `error` event inside the stream (the HTTP status was already 200)
    ui.status.textContent = "Uploading…";
    try {
      const response = await postForm("/v1/audio/transcriptions", this.form(request, request.format, stream), {
        onUpload: (fraction) => {
          ui.upload.value = fraction;
          if (fraction >= 1 && !uploaded) {
            uploaded = true;
            ui.status.textContent = "Uploaded; the server is transcribing…";
            if (!stream || request.format !== "verbose_json") ui.work.removeAttribute("value");  // indeterminate
          }
        },
        onText: (body, contentType) => {
          if (!contentType.startsWith("text/event-stream")) return;
          const events = sseEvents(body);
          for (const event of events.slice(seen)) {
            if (event.type === "transcript.text.delta") {
              text += event.delta;
              if (request.format !== "verbose_json") this.view.showStreamingText(text);
            } else if (event.type === "transcript.text.segment") {
              this.view.addSegment(event);
              if (duration()) ui.work.value = Math.min(1, event.end / duration());
              ui.status.textContent = `Transcribing… ${event.end.toFixed(1)} s of ${duration().toFixed(1)} s`;
            } else if (event.type === "transcript.text.done") {
              text = event.text;
              if (request.format === "verbose_json") {
                const { type, ...body } = event;  // the done event carries the whole verbose_json body
                verbose = body;
              }
            } else if (event.type === "error") {
              failure = new ApiFailure("The server failed while transcribing.", { detail: event.error?.message || "" });
            }
          }
          seen = events.length;
        },
      });
      if (failure) throw failure;
      ui.work.value = 1;
      const raw = {};
      if (!stream) {
        raw[request.format] = response.text;
        ui.raw.textContent = response.text;
        ui.raw.hidden = false;
      } else if (request.format !== "verbose_json") {
        this.view.showStreamingText(text);
        this.view.finishStreamingText();
      }
      this.result = { request, text: verbose ? verbose.text : text, verbose, raw };
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const words = (this.result.text || "").split(/\s+/).filter(Boolean).length;
      ui.status.textContent = `Done in ${seconds} s: ${words} words. Click a time to play from there.`;
      ui.downloads.hidden = false;
    } catch (error) {
      ui.work.value = 0;
      ui.status.textContent = "";
      this.showError(ui.error, error);
    } finally {
      this.busy = false;
      ui.submit.disabled = false;
    }
  }

  /** TXT and JSON come from the result; SRT/VTT are rendered by the server (one renderer for subtitles). */
  async download(kind) {
    const { ui } = this;
    const result = this.result;
    if (!result) return;
    this.showError(ui.error, null);
    let body;
    try {
      if (kind === "txt") body = `${result.text}\n`;
      else if (kind === "json") body = JSON.stringify(result.verbose || { text: result.text }, null, 2);
      else if (result.raw[kind] !== undefined) body = result.raw[kind];
      else {
        ui.status.textContent = `Asking the server for ${kind.toUpperCase()} (one more pass over the audio)…`;
        const response = await postForm("/v1/audio/transcriptions", this.form(result.request, kind, false));
        body = result.raw[kind] = response.text;
        ui.status.textContent = `${kind.toUpperCase()} ready.`;
      }
    } catch (error) {
      ui.status.textContent = "";
      this.showError(ui.error, error);
      return;
    }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([body], { type: MEDIA[kind] }));
    link.download = `${result.request.file.name.replace(/\.[^.]+$/, "")}.${kind}`;  // the kind is the extension
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }
}

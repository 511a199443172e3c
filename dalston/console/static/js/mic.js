// Microphone: stream to a realtime model over /v1/realtime (dalston's native protocol, docs/REALTIME.md)
// and show partial text (grey, may change) turning into final text (black), with the latency of each final.

import { ApiFailure, getJson, key } from "./api.js";

const REALTIME_ERRORS = {
  unauthorized: "The API key was not accepted for the realtime session.",
  model_not_served: "This server does not serve that realtime model.",
  too_many_sessions: "All realtime sessions of this model are in use. Try again in a moment.",
  not_ready: "The model is still loading, or the server is shutting down. Try again shortly.",
  idle_timeout: "The session ended because no audio arrived for a while.",
  audio_too_long: "The session reached the longest recording this model accepts.",
};

export class MicPanel {
  constructor(ui, showError) {
    this.ui = ui;
    this.showError = showError;
    this.session = null;
    ui.start.addEventListener("click", () => this.start());
    ui.stop.addEventListener("click", () => this.stop());
  }

  setRunning(running) {
    this.ui.start.disabled = running;
    this.ui.stop.disabled = !running;
    this.ui.model.disabled = running;
  }

  async start() {
    const { ui } = this;
    const model = ui.model.value;
    this.showError(ui.error, null);
    if (!model) {
      this.showError(ui.error, new ApiFailure("No realtime model is listed here."));
      return;
    }
    this.setRunning(true);
    ui.finals.replaceChildren();
    ui.partial.textContent = "";
    try {
      // The WebSocket refusal of a bad key or a missing engine cannot say why in a browser; ask first.
      const card = await getJson(`/v1/models/${encodeURIComponent(model)}`);
      if (card.available === false) {
        throw new ApiFailure("No engine is running for that model right now. Try again shortly.");
      }
      ui.status.textContent = "Asking for the microphone…";
      const media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      const context = new AudioContext();
      await context.audioWorklet.addModule("/console/js/capture-worklet.js");
      this.session = new Session(this, model, ui.language.value.trim().toLowerCase() || null, media, context);
    } catch (error) {
      this.setRunning(false);
      ui.status.textContent = "";
      this.showError(ui.error, error.name === "NotAllowedError"
        ? new ApiFailure("The browser did not allow the microphone.") : error);
    }
  }

  stop() {
    this.session?.end();
  }

  ended(message, failure) {
    this.session = null;
    this.setRunning(false);
    this.ui.status.textContent = message;
    if (failure) this.showError(this.ui.error, failure);
  }
}

class Session {
  constructor(panel, model, language, media, context) {
    this.panel = panel;
    this.ui = panel.ui;
    this.media = media;
    this.context = context;
    this.sent = [];       // [{end: stream seconds sent so far, at: performance.now()}]
    this.sentSeconds = 0;
    this.partials = 0;    // partial events since the last final
    this.failure = null;
    this.summary = "";
    const url = new URL("/v1/realtime", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("model", model);
    // Browsers cannot set an Authorization header on a WebSocket; the native protocol takes ?api_key=.
    url.searchParams.set("api_key", key.get());
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.ws.send(JSON.stringify({
      type: "session.config", sample_rate: context.sampleRate, encoding: "float32", language,
    }));
    this.ws.onmessage = (message) => this.onEvent(JSON.parse(message.data));
    this.ws.onclose = (close) => this.onClose(close);
    this.ui.status.textContent = "Connecting…";
    this.pending = [];    // frames captured before the server accepted the session, sent on session.begin
    this.capture();
  }

  capture() {
    const source = this.context.createMediaStreamSource(this.media);
    this.node = new AudioWorkletNode(this.context, "dalston-capture");
    this.node.port.onmessage = ({ data }) => this.sendFrame(data);
    const mute = this.context.createGain();
    mute.gain.value = 0;  // the graph must reach the destination to be pulled; nothing is played back
    source.connect(this.node).connect(mute).connect(this.context.destination);
  }

  sendFrame(frame) {
    if (this.pending) {
      this.pending.push(frame);
      return;
    }
    if (this.ws.readyState !== WebSocket.OPEN || this.ending) return;
    this.ws.send(frame.buffer);
    this.sentSeconds += frame.length / this.context.sampleRate;
    this.sent.push({ end: this.sentSeconds, at: performance.now() });
  }

  /** Wall time from sending the audio at `end` (stream seconds) to receiving the final that covers it. */
  latency(end) {
    const frame = this.sent.find((s) => s.end >= end - 0.001) || this.sent[this.sent.length - 1];
    return frame ? Math.round(performance.now() - frame.at) : null;
  }

  onEvent(event) {
    const { ui } = this;
    switch (event.type) {
      case "session.begin": {
        ui.status.textContent = "Listening. Speak now; press Stop when done.";
        const queued = this.pending || [];
        this.pending = null;
        for (const frame of queued) this.sendFrame(frame);
        break;
      }
      case "vad.speech_start":
        ui.status.textContent = "Hearing speech…";
        break;
      case "vad.speech_end":
        ui.status.textContent = "Listening (pause detected).";
        break;
      case "transcript.partial":
        this.partials += 1;
        ui.partial.textContent = event.text;
        break;
      case "transcript.final": {
        const item = document.createElement("li");
        item.dataset.start = event.start;
        item.dataset.end = event.end;
        item.dataset.partials = String(this.partials);
        const text = document.createElement("span");
        text.className = "final";
        text.textContent = event.text.trim();
        const ms = this.latency(event.end);
        const latency = document.createElement("span");
        latency.className = "latency";
        latency.textContent = ms === null ? "" : `latency ${ms} ms`;
        latency.title = "time from sending the last audio of this text to receiving it as final";
        item.append(text, latency);
        ui.finals.append(item);
        ui.partial.textContent = "";
        this.partials = 0;
        break;
      }
      case "error":
        this.failure = new ApiFailure(REALTIME_ERRORS[event.code] || "The realtime session failed.",
                                      { code: event.code, detail: event.message });
        break;
      case "session.end":
        this.summary = `Session ended: ${event.duration.toFixed(1)} s of audio, ${event.finals} final(s).`;
        break;
      default:
        break;  // other events are informational
    }
  }

  end() {
    if (this.ending) return;
    this.ending = true;
    this.release();
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ui.status.textContent = "Finishing the last words…";
      this.ws.send(JSON.stringify({ type: "session.end" }));
    } else {
      this.ws.close();
    }
  }

  release() {
    this.node?.disconnect();
    for (const track of this.media.getTracks()) track.stop();
    if (this.context.state !== "closed") this.context.close();
  }

  onClose(close) {
    this.release();
    let failure = this.failure;
    if (!failure && close.code !== 1000) {
      failure = new ApiFailure(`The realtime connection closed unexpectedly (code ${close.code}).`);
    }
    this.panel.ended(failure ? "" : this.summary || "Session ended.", failure);
  }
}

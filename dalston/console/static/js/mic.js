// Microphone: stream to a realtime model over /v1/realtime and show text as it arrives (grey) turning
// final (black), with the latency of each final. Two protocols (docs/REALTIME.md):
//   dalston: partials that may still change, so text shows while you speak (the default);
//   OpenAI Realtime: the protocol OpenAI clients speak; it sends only text that will not change, so a
//   model whose final is a fresh decode (Whisper streaming) shows its text when each utterance ends.

import { ApiFailure, getJson, key } from "./api.js";

// The `error` codes are the HTTP API's (dalston/admission.py), so a session refusal reads like a request's.
const REALTIME_ERRORS = {
  missing_api_key: "The API key was not accepted for the realtime session.",
  invalid_api_key: "The API key was not accepted for the realtime session.",
  forbidden_credential: "That is not a dalston key: paste a key that starts with dk_.",
  model_not_found: "This server does not serve that realtime model.",
  too_many_sessions: "All realtime sessions of this model are in use. Try again in a moment.",
  model_not_ready: "The model is still loading. Try again shortly.",
  shutting_down: "The server is shutting down. Try again shortly.",
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
    this.ui.protocol.disabled = running;
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
      // 24 kHz, the rate OpenAI clients send (the dalston protocol takes it too); the browser resamples
      const context = new AudioContext({ sampleRate: 24000 });
      await context.audioWorklet.addModule("/console/js/capture-worklet.js");
      const language = ui.language.value.trim().toLowerCase() || null;
      const Protocol = ui.protocol.value === "openai" ? OpenAISession : NativeSession;
      this.session = new Protocol(this, model, language, media, context);
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

/** What both protocols share: capture, frames held until the server is ready, latency, the final list. */
class RealtimeSession {
  constructor(panel, media, context) {
    this.panel = panel;
    this.ui = panel.ui;
    this.media = media;
    this.context = context;
    this.sent = [];        // [{end: stream seconds sent so far, at: performance.now()}]
    this.sentSeconds = 0;
    this.partials = 0;     // partial updates shown since the last final
    this.finals = 0;
    this.failure = null;
    this.pending = [];     // frames captured before the server accepted the session
    this.ui.status.textContent = "Connecting…";
  }

  open(url, protocols) {
    this.ws = new WebSocket(url, protocols);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.configure();
    this.ws.onmessage = (message) => this.onEvent(JSON.parse(message.data));
    this.ws.onclose = (close) => this.onClose(close);
    const source = this.context.createMediaStreamSource(this.media);
    this.node = new AudioWorkletNode(this.context, "dalston-capture");
    this.node.port.onmessage = ({ data }) => this.sendFrame(data);
    const mute = this.context.createGain();
    mute.gain.value = 0;  // the graph must reach the destination to be pulled; nothing is played back
    source.connect(this.node).connect(mute).connect(this.context.destination);
  }

  /** The server accepted the settings: send what was captured meanwhile, then stream live. */
  ready() {
    this.ui.status.textContent = "Listening. Speak now; press Stop when done.";
    const queued = this.pending || [];
    this.pending = null;
    for (const frame of queued) this.sendFrame(frame);
  }

  sendFrame(frame) {
    if (this.pending) {
      this.pending.push(frame);
      return;
    }
    if (this.ws.readyState !== WebSocket.OPEN || this.ending) return;
    this.sendAudio(frame);
    this.sentSeconds += frame.length / this.context.sampleRate;
    this.sent.push({ end: this.sentSeconds, at: performance.now() });
  }

  send(event) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  showPartial(text) {
    this.partials += 1;
    this.ui.partial.textContent = text;
  }

  /** A final: black, with the wall time from sending the audio at `end` (stream seconds) to now. */
  showFinal(text, end) {
    this.ui.partial.textContent = "";
    const partials = this.partials;
    this.partials = 0;
    if (!text.trim()) return;
    const frame = this.sent.find((s) => s.end >= end - 0.001) || this.sent[this.sent.length - 1];
    const item = document.createElement("li");
    item.dataset.end = String(end);
    item.dataset.partials = String(partials);
    const final = document.createElement("span");
    final.className = "final";
    final.textContent = text.trim();
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.textContent = frame ? `latency ${Math.round(performance.now() - frame.at)} ms` : "";
    latency.title = "time from sending the last audio of this text to receiving it as final";
    item.append(final, latency);
    this.ui.finals.append(item);
    this.finals += 1;
  }

  fail(code, message) {
    this.failure = new ApiFailure(REALTIME_ERRORS[code] || "The realtime session reported an error.",
                                  { code, detail: message || "" });
  }

  end() {
    if (this.ending) return;
    this.ending = true;
    this.release();
    if (this.ws.readyState === WebSocket.OPEN && !this.pending) {
      this.ui.status.textContent = "Finishing the last words…";
      this.finish();
    } else {
      this.ws.close(1000);
    }
  }

  release() {
    this.node?.disconnect();
    for (const track of this.media.getTracks()) track.stop();
    if (this.context.state !== "closed") this.context.close();
  }

  onClose(close) {
    clearTimeout(this.timer);
    this.release();
    let failure = this.failure;
    if (!failure && close.code !== 1000) {
      failure = new ApiFailure(`The realtime connection closed unexpectedly (code ${close.code}).`);
    }
    const summary = `Session ended: ${this.sentSeconds.toFixed(1)} s of audio, ${this.finals} final(s).`;
    this.panel.ended(failure ? "" : summary, failure);
  }
}

/** dalston's native protocol: `session.config`, binary float32 frames, partials that may change. */
class NativeSession extends RealtimeSession {
  constructor(panel, model, language, media, context) {
    super(panel, media, context);
    this.language = language;
    const url = wsUrl({ model });
    // The dalston protocol reads the key from ?api_key= when a client cannot set headers: the one
    // place the key is in a URL (dalston logs no WebSocket URL). The OpenAI protocol avoids it.
    url.searchParams.set("api_key", key.get());
    this.open(url, []);
  }

  configure() {
    this.send({ type: "session.config", sample_rate: this.context.sampleRate, encoding: "float32",
                language: this.language });
  }

  sendAudio(frame) {
    this.ws.send(frame.buffer);
  }

  onEvent(event) {
    const { ui } = this;
    if (event.type === "session.begin") this.ready();
    else if (event.type === "vad.speech_start") ui.status.textContent = "Hearing speech…";
    else if (event.type === "vad.speech_end") ui.status.textContent = "Listening (pause detected).";
    else if (event.type === "transcript.partial") this.showPartial(event.text);
    else if (event.type === "transcript.final") this.showFinal(event.text, event.end);
    else if (event.type === "error") this.fail(event.code, event.message);
  }

  finish() {
    this.send({ type: "session.end" });  // the server sends the last finals, then closes with 1000
  }
}

/**
 * The OpenAI Realtime protocol, transcription session: `session.update`, base64 pcm16 appends; the
 * server's VAD makes items whose deltas (text that will not change) show grey until `completed`.
 */
class OpenAISession extends RealtimeSession {
  constructor(panel, model, language, media, context) {
    super(panel, media, context);
    this.model = model;
    this.language = language;
    this.itemEnd = new Map();  // item_id -> audio_end_ms from speech_stopped
    this.text = "";            // the current item's deltas
    // A browser cannot set headers on a WebSocket: the key goes in the subprotocol offer, as in
    // OpenAI's browser SDK, so it is never part of a URL.
    this.open(wsUrl({ intent: "transcription", model }), ["realtime", `openai-insecure-api-key.${key.get()}`]);
  }

  configure() {
    const transcription = this.language ? { model: this.model, language: this.language } : { model: this.model };
    this.send({ type: "session.update", session: { type: "transcription", audio: { input: {
      format: { type: "audio/pcm", rate: this.context.sampleRate }, transcription,
      turn_detection: { type: "server_vad" },
    } } } });
  }

  sendAudio(frame) {
    this.send({ type: "input_audio_buffer.append", audio: pcm16Base64(frame) });
  }

  onEvent(event) {
    const { ui } = this;
    switch (event.type) {
      case "session.updated":
        if (this.pending) this.ready();
        break;
      case "input_audio_buffer.speech_started":
        ui.status.textContent = "Hearing speech…";
        break;
      case "input_audio_buffer.speech_stopped":
        this.itemEnd.set(event.item_id, event.audio_end_ms / 1000);
        ui.status.textContent = "Listening (pause detected).";
        break;
      case "conversation.item.input_audio_transcription.delta":
        this.text += event.delta;
        this.showPartial(this.text);
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.text = "";
        this.showFinal(event.transcript || "", this.itemEnd.get(event.item_id) ?? this.sentSeconds);
        if (this.ending) this.ws.close(1000);  // the commit sent by Stop is answered
        break;
      case "conversation.item.input_audio_transcription.failed":
        this.fail(event.error?.code, event.error?.message);
        break;
      case "error":
        if (this.ending && event.error?.code === "input_audio_buffer_commit_empty") this.ws.close(1000);
        else this.fail(event.error?.code, event.error?.message);
        break;
      default:
        break;  // session.created, committed, item added: nothing to show
    }
  }

  finish() {
    // No more audio: commit what the server holds so its last words become final, then close.
    this.send({ type: "input_audio_buffer.commit" });
    this.timer = setTimeout(() => this.ws.close(1000), 15000);
  }
}

function wsUrl(params) {
  const url = new URL("/v1/realtime", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  return url;
}

/** Float32 samples as base64 little-endian pcm16 (every browser engine runs little-endian). */
function pcm16Base64(frame) {
  const pcm = new Int16Array(frame.length);
  for (let i = 0; i < frame.length; i++) {
    const s = Math.max(-1, Math.min(1, frame[i]));
    pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  const bytes = new Uint8Array(pcm.buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

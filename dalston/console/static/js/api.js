// The API as any client sees it: the key, authenticated requests, and errors in plain words.

const KEY_SLOT = "dalston.key";

/** The key lives in sessionStorage: this tab only, gone when it closes, never in a URL or a log. */
export const key = {
  get: () => sessionStorage.getItem(KEY_SLOT) || "",
  set: (value) => sessionStorage.setItem(KEY_SLOT, value),
  clear: () => sessionStorage.removeItem(KEY_SLOT),
};

/** An API failure with a sentence for people (`message`) and the server's own words (`detail`). */
export class ApiFailure extends Error {
  constructor(message, { status = 0, code = "", detail = "", retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

const AUDIO_CODES = new Set(["invalid_audio", "truncated_audio", "no_audio_stream", "empty_file"]);

/** Turn a status + OpenAI-style error body into an ApiFailure a person understands. */
export function explain(status, bodyText, retryAfter) {
  let error = {};
  try {
    error = JSON.parse(bodyText).error || {};
  } catch {
    // not JSON (a proxy's HTML page, an empty body): the status is all we have
  }
  const code = error.code || "";
  const detail = error.message || bodyText.slice(0, 300);
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
  let message;
  if (status === 0) message = "Could not reach the server. Is it still running?";
  else if (code === "forbidden_credential") message = "That is not a dalston key: paste a key that starts with dk_.";
  else if (status === 401) message = "The API key was not accepted. Check that you pasted the whole dk_… key.";
  else if (code === "model_not_found") message = "This server does not serve that model.";
  else if (code === "model_unavailable") message = "No engine is running for that model right now." + wait;
  else if (code === "model_not_ready") message = "The model is still loading." + wait;
  else if (status === 429) message = "The server is busy with other requests." + wait;
  else if (code === "shutting_down") message = "The server is shutting down." + wait;
  else if (code === "too_many_connections") message = "The server has too many open connections." + wait;
  else if (status === 408) message = "The upload was too slow and the server stopped waiting for it.";
  else if (AUDIO_CODES.has(code)) message = "That file is not audio the server can read.";
  else if (code === "audio_too_long") message = "The recording is longer than this model accepts.";
  else if (status === 413) message = "The file is larger than this server accepts.";
  else if (code === "unsupported_language") message = "This model does not know that language.";
  else if (status >= 500) message = `The server failed (${status}).`;
  else message = "The server refused the request.";
  return new ApiFailure(message, { status, code, detail, retryAfter });
}

function authHeaders() {
  return { Authorization: `Bearer ${key.get()}` };
}

/** GET a JSON resource with the key; throws ApiFailure. */
export async function getJson(path) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders() });
  } catch {
    throw explain(0, "", null);
  }
  const text = await response.text();
  if (!response.ok) throw explain(response.status, text, response.headers.get("Retry-After"));
  return JSON.parse(text);
}

/**
 * POST a multipart form with upload progress and the response as it arrives (XHR: fetch cannot
 * report upload progress). `onUpload(fraction)`, `onText(fullTextSoFar, contentType)`.
 * Resolves with {text, contentType}; rejects with ApiFailure.
 */
export function postForm(path, form, { onUpload = () => {}, onText = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", authHeaders().Authorization);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onUpload(e.loaded / e.total); };
    xhr.upload.onload = () => onUpload(1);
    const contentType = () => xhr.getResponseHeader("Content-Type") || "";
    xhr.onprogress = () => { if (xhr.status === 200) onText(xhr.responseText, contentType()); };
    xhr.onload = () => {
      if (xhr.status === 200) {
        onText(xhr.responseText, contentType());
        resolve({ text: xhr.responseText, contentType: contentType() });
      } else {
        reject(explain(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After")));
      }
    };
    xhr.onerror = () => reject(explain(0, "", null));
    xhr.send(form);
  });
}

/** Parse a server-sent event stream read so far: the complete `data:` events, in order. */
export function sseEvents(text) {
  const events = [];
  for (const block of text.split("\n\n").slice(0, -1)) {
    const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
    if (data) events.push(JSON.parse(data));
  }
  return events;
}

// The transcript view: segments with clickable times, words highlighted while the audio plays.

export function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

export class TranscriptView {
  /** @param {HTMLElement} container  @param {HTMLAudioElement} player */
  constructor(container, player) {
    this.container = container;
    this.player = player;
    this.words = [];     // {start, end, el}
    this.segments = [];  // {start, end, el}
    this.current = null;
    this.currentSegment = null;
    player.addEventListener("timeupdate", () => this.highlight());
    player.addEventListener("seeked", () => this.highlight());
    player.addEventListener("play", () => this.follow());
  }

  clear() {
    this.container.replaceChildren();
    this.words = [];
    this.segments = [];
    this.current = this.currentSegment = null;
    this.live = null;
  }

  /** Text that arrives without times (json/text streams): shown as one growing paragraph. */
  showStreamingText(text) {
    if (!this.live) {
      this.live = document.createElement("p");
      this.live.className = "streaming";
      this.container.append(this.live);
    }
    this.live.textContent = text;
  }

  finishStreamingText() {
    if (this.live) this.live.classList.remove("streaming");
  }

  /** One segment of a verbose_json result (from a stream event or the final body). */
  addSegment(segment) {
    const row = document.createElement("div");
    row.className = "segment";
    const time = document.createElement("button");
    time.type = "button";
    time.className = "time";
    time.textContent = clock(segment.start);
    time.setAttribute("aria-label", `Play from ${clock(segment.start)}`);
    time.addEventListener("click", () => this.seek(segment.start));
    const text = document.createElement("span");
    text.className = "text";
    if (segment.words && segment.words.length) {
      segment.words.forEach((w, i) => {
        const span = document.createElement("span");
        span.className = "word";
        span.textContent = w.word;
        span.dataset.start = w.start;
        span.addEventListener("click", () => this.seek(w.start));  // mouse shortcut; the time buttons are the keyboard way
        text.append(span, i < segment.words.length - 1 ? " " : "");
        this.words.push({ start: w.start, end: w.end, el: span });
      });
    } else {
      text.textContent = segment.text.trim();
    }
    row.append(time, text);
    this.container.append(row);
    this.segments.push({ start: segment.start, end: segment.end, el: row });
  }

  seek(seconds) {
    this.player.currentTime = seconds;
    this.player.play().catch(() => {});  // autoplay may be refused; the position is set either way
    this.highlight();
  }

  /** While playing, highlight on every frame (timeupdate alone is ~4 per second: too coarse for words). */
  follow() {
    const step = () => {
      this.highlight();
      if (!this.player.paused && !this.player.ended) requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  highlight() {
    const t = this.player.currentTime;
    const word = this.words.find((w) => w.start <= t && t < w.end) || null;
    if (word !== this.current) {
      this.current?.el.classList.remove("current");
      word?.el.classList.add("current");
      this.current = word;
    }
    const segment = this.segments.find((s) => s.start <= t && t < s.end) || null;
    if (segment !== this.currentSegment) {
      this.currentSegment?.el.classList.remove("current");
      segment?.el.classList.add("current");
      this.currentSegment = segment;
    }
  }
}

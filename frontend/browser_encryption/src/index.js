// The "Encrypt in my browser" component (Streamlit components v2): everything that touches the digit
// or the secret key happens here, in the tab.
//
// On mount the tab loads node-seal, makes a key pair (tab_seal.js) and hands Python its public material
// to upload (a trigger value without a ciphertext). The user draws on this
// component's own canvas; "Encrypt and classify" normalises the drawing to 28x28 (to_mnist.js, the
// same algorithm as lib/preprocess.py), encrypts it, and hands Python one trigger value: the
// ciphertext, plus the public material the first time. Python uploads and relays (lib/tab_mode.py)
// and passes the encrypted result back in ``data``; the tab checks it, decrypts it and shows the
// prediction, the 10 scores and where the time went. Python never gets pixels, scores or the key.
import { ResultRefused, TabKeyPair, loadSeal } from "./tab_seal.js";
import { toMnist } from "./to_mnist.js";

const SIDE = 280;
const instances = new WeakMap();

const b64 = (bytes) => {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
};
const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const ms = (value) => (value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(value < 10 ? 1 : 0)} ms`);
const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");

const CSS = `
.tab-mode { display: flex; gap: 2.5rem; flex-wrap: wrap; font-family: var(--st-font, sans-serif); color: var(--st-text-color, #e6e6e6); }
.column { display: flex; flex-direction: column; gap: 0.6rem; min-width: 280px; flex: 1; }
.pad { width: 280px; height: 280px; border: 1px solid #8a94a6; border-radius: 6px; touch-action: none; cursor: crosshair; }
.preview { width: 84px; height: 84px; image-rendering: pixelated; border: 1px solid #8a94a6; }
.row { display: flex; align-items: center; gap: 0.8rem; }
button { font: inherit; padding: 0.45rem 0.9rem; border-radius: 0.5rem; border: 1px solid #8a94a6; background: transparent; color: inherit; cursor: pointer; }
button.primary { background: var(--st-primary-color, #4fc3f7); color: #0e1117; border: none; font-weight: 600; max-width: 280px; }
button:disabled { opacity: 0.5; cursor: wait; }
.keys, .sizes { font-size: 0.85rem; opacity: 0.85; }
.status { padding: 0.6rem 0.8rem; border-radius: 0.5rem; background: rgba(79, 195, 247, 0.12); }
.status.error { background: rgba(229, 115, 115, 0.2); }
.status.warning { background: rgba(255, 183, 77, 0.2); }
.status.done { background: rgba(129, 199, 132, 0.15); }
.label { font-size: 0.9rem; opacity: 0.75; margin-top: 0.4rem; }
.digit { font-size: 7rem; font-weight: 800; line-height: 1; color: var(--st-primary-color, #4fc3f7); }
.bar, .stage { display: grid; grid-template-columns: 1.2rem 1fr 3.5rem; align-items: center; gap: 0.5rem; font-size: 0.85rem; }
.stage { grid-template-columns: 17rem 1fr 4.5rem; white-space: pre; }
.bar i, .stage i { display: block; height: 0.8rem; background: #8a94a6; border-radius: 2px; }
.bar.top i { background: var(--st-primary-color, #4fc3f7); }
.stage.tab i { background: #81c784; }
.stage.server i { background: #ffb74d; }
.stage.client i, .stage.wire i { background: #4fc3f7; }
b { font-weight: 500; text-align: right; }
`;

const HTML = `
<style>${CSS}</style>
<div class="tab-mode">
  <div class="column">
    <div class="keys" data-testid="tab-keys">Loading Microsoft SEAL (WebAssembly) …</div>
    <canvas class="pad" width="${SIDE}" height="${SIDE}" data-testid="tab-canvas"></canvas>
    <div class="row">
      <label>Stroke <input class="stroke" type="range" min="6" max="40" value="20"></label>
      <button class="clear" type="button">Clear</button>
      <canvas class="preview" width="28" height="28" title="What gets encrypted: 28×28, made in this tab"></canvas>
    </div>
    <button class="classify primary" type="button" data-testid="tab-classify" disabled>Encrypt in my browser and classify</button>
  </div>
  <div class="column">
    <div class="status" data-testid="tab-status">Draw a digit, then press the button.</div>
    <div class="result" hidden>
      <div class="label">Prediction (decrypted in this tab)</div>
      <div class="digit" data-testid="tab-prediction"></div>
      <div class="bars"></div>
      <div class="label">Where the time went</div>
      <div class="waterfall" data-testid="tab-waterfall"></div>
      <div class="sizes"></div>
    </div>
  </div>
</div>`;

/** Run toMnist once on a made-up stroke while the page is idle: its first call in a fresh tab spends
 * about 50 ms in the JavaScript engine's warm-up, which would otherwise land on the first digit. */
function warmUpNormalisation() {
  const rgba = new Uint8ClampedArray(SIDE * SIDE * 4);
  for (let i = 60; i < 220; i += 1) {
    for (let w = -8; w <= 8; w += 1) rgba.fill(255, ((i + w) * SIDE + i) * 4, ((i + w) * SIDE + i) * 4 + 4);
  }
  toMnist(rgba, SIDE, SIDE);
}

/** Only tests/test_browser_mode.py installs this probe (a page init script): it gets the secret key and
 * the pixels, so that it can search everything the tab sent the app for them. Without it, nothing. */
function probe(payload) {
  const hook = globalThis.__encryptedMnistTabProbe;
  if (typeof hook === "function") hook(payload());
}

class TabMode {
  constructor(root, config) {
    this.root = root;
    this.config = config;
    root.innerHTML = HTML;
    this.$ = (selector) => root.querySelector(selector);
    this.pad = this.$(".pad");
    this.ink = this.pad.getContext("2d", { willReadFrequently: true });
    this.clearPad();
    this.drawn = false;
    this.keyRef = randomId();
    this.keysSent = false;
    this.pending = null; // {id, keysOnly} or {id, started, normaliseMs, encryptMs, sentAt}
    this.seen = new Set();
    this.keygenMs = null;
    this.wireDrawing();
    this.$(".clear").onclick = () => this.clearPad();
    this.ready = this.makeKeys();
  }

  async makeKeys() {
    const started = performance.now();
    try {
      await loadSeal();
      const loaded = performance.now();
      this.keys = await TabKeyPair.create(this.config);
      this.keygenMs = this.keys.timings.keygen;
      this.setupMs = { load: loaded - started, context: this.keys.timings.context };
      this.$(".keys").textContent = `🔒 Key pair made in this tab in ${ms(this.keygenMs)} (SEAL 4.1, WebAssembly; set-up ${ms(this.setupMs.load + this.setupMs.context)}). The secret key never leaves it.`;
      warmUpNormalisation();
      probe(() => ({ secretKey: b64(this.keys.secretKeyBytesForProbe()) }));
      this.uploadKeys();
    } catch (error) {
      this.$(".keys").textContent = `Could not make a key pair in this browser: ${error?.message ?? error}. Use a current Chromium, Firefox or Safari, or the other input modes.`;
    }
  }

  clearPad() {
    this.ink.fillStyle = "#000";
    this.ink.fillRect(0, 0, SIDE, SIDE);
    this.drawn = false;
    const preview = this.$(".preview").getContext("2d");
    preview.clearRect(0, 0, 28, 28);
  }

  wireDrawing() {
    let last = null;
    const point = (event) => {
      const box = this.pad.getBoundingClientRect();
      return [((event.clientX - box.left) * SIDE) / box.width, ((event.clientY - box.top) * SIDE) / box.height];
    };
    const stroke = (from, to) => {
      const ink = this.ink;
      ink.strokeStyle = "#fff";
      ink.lineCap = ink.lineJoin = "round";
      ink.lineWidth = Number(this.$(".stroke").value);
      ink.beginPath();
      ink.moveTo(...from);
      ink.lineTo(...to);
      ink.stroke();
      this.drawn = true;
    };
    this.pad.onpointerdown = (event) => {
      this.pad.setPointerCapture(event.pointerId);
      last = point(event);
      stroke(last, last);
    };
    this.pad.onpointermove = (event) => {
      if (last === null) return;
      const next = point(event);
      stroke(last, next);
      last = next;
    };
    this.pad.onpointerup = this.pad.onpointercancel = () => {
      last = null;
    };
  }

  /** Hand Python the public material as soon as it exists, so the first digit need not wait for it. */
  uploadKeys() {
    const id = randomId();
    this.pending = { id, keysOnly: true };
    const button = this.$(".classify");
    button.disabled = true;
    button.textContent = "Uploading your public keys (once) …";
    this.sendTrigger("request", { id, key_ref: this.keyRef, public_material: b64(this.keys.publicMaterial()) });
  }

  /** Normalise, encrypt, and hand Python the ciphertext (and the public material, if not yet uploaded). */
  async classify() {
    await this.ready;
    if (!this.keys || this.pending) return;
    const started = performance.now();
    let pixels;
    try {
      pixels = toMnist(this.ink.getImageData(0, 0, SIDE, SIDE).data, SIDE, SIDE);
    } catch (error) {
      this.showStatus(error?.message ?? String(error), "warning");
      return;
    }
    const normalised = performance.now();
    probe(() => ({ pixels: Array.from(pixels, String) }));
    this.showPreview(pixels);
    const ciphertext = this.keys.encrypt(pixels);
    const encrypted = performance.now();
    pixels.fill(0);
    const id = randomId();
    const request = { id, key_ref: this.keyRef, ciphertext: b64(ciphertext) };
    if (!this.keysSent) request.public_material = b64(this.keys.publicMaterial());
    this.pending = { id, normaliseMs: normalised - started, encryptMs: encrypted - normalised, sentAt: performance.now(), started };
    this.showStatus(this.keysSent ? "Encrypted. Scoring the ciphertext on the service …" : "Encrypted. Uploading the public keys (once) and scoring on the service …", "busy");
    this.$(".classify").disabled = true;
    this.sendTrigger("request", request);
  }

  /** Python's answer for our pending request: an encrypted result to check and decrypt, or an error. */
  receive(answer) {
    const pending = this.pending;
    if (!answer || !pending || answer.id !== pending.id || this.seen.has(answer.id)) return;
    this.seen.add(answer.id);
    this.pending = null;
    const button = this.$(".classify");
    button.disabled = false;
    this.keysSent = answer.keys_uploaded === this.keyRef;
    if (pending.keysOnly) {
      button.textContent = "Encrypt in my browser and classify";
      if (answer.error) this.$(".keys").textContent += ` The public keys could not be uploaded yet (${answer.error}); they go with your first digit.`;
      return;
    }
    const relayMs = performance.now() - pending.sentAt;
    if (answer.error) {
      this.showStatus(answer.error, "error");
      return;
    }
    const decryptStarted = performance.now();
    let scores;
    try {
      scores = this.keys.decrypt(unb64(answer.result));
    } catch (error) {
      const why = error instanceof ResultRefused ? error.message : String(error?.message ?? error);
      this.showStatus(`This tab refused the service's result: ${why}. Nothing was shown. Press the button again; if it keeps happening, reload the page.`, "error");
      return;
    }
    const decryptMs = performance.now() - decryptStarted;
    const totalMs = performance.now() - pending.started;
    const timings = {
      setup: this.setupMs,
      normalise: pending.normaliseMs,
      encrypt: pending.encryptMs,
      relay: relayMs,
      decrypt: decryptMs,
      total: totalMs,
      keygen: this.keygenMs,
    };
    this.lastTimings = timings;
    this.showResult(scores, answer, timings);
  }

  showPreview(pixels) {
    const preview = this.$(".preview").getContext("2d");
    const image = preview.createImageData(28, 28);
    pixels.forEach((value, i) => {
      const level = Math.round(value * 255);
      image.data.set([level, level, level, 255], i * 4);
    });
    preview.putImageData(image, 0, 0);
  }

  showStatus(message, kind) {
    const status = this.$(".status");
    status.textContent = message;
    status.className = `status ${kind ?? ""}`;
    if (kind === "error" || kind === "warning") this.$(".result").hidden = true;
  }

  showResult(scores, answer, timings) {
    const label = scores.indexOf(Math.max(...scores));
    const top = Math.max(...scores);
    const exp = scores.map((s) => Math.exp(s - top));
    const sum = exp.reduce((a, b) => a + b, 0);
    this.showStatus(`Decrypted in this tab: ${ms(timings.total)} end to end.`, "done");
    this.$(".result").hidden = false;
    const digit = this.$(".digit");
    digit.textContent = String(label);
    digit.dataset.scores = JSON.stringify(Array.from(scores));
    this.$(".bars").innerHTML = Array.from(scores, (score, c) => {
      const width = Math.max(1, (100 * exp[c]) / sum);
      return `<div class="bar${c === label ? " top" : ""}"><span>${c}</span><i style="width:${width}%"></i><b>${score.toFixed(2)}</b></div>`;
    }).join("");
    const server = answer.stages ?? [];
    const where = { client: "app", server: "service" };
    const rows = [
      ["tab: key generation (once)", timings.keygen, "tab"],
      ["tab: normalise to 28×28", timings.normalise, "tab"],
      ["tab: encrypt", timings.encrypt, "tab"],
      ["relay: tab → app → service → tab", timings.relay, "wire"],
      ...server.map(([name, seconds, side]) => [`  ${where[side] ?? side}: ${name}`, seconds * 1000, side]),
      ["tab: decrypt", timings.decrypt, "tab"],
    ];
    const longest = Math.max(...rows.map((row) => row[1] ?? 0), 1);
    const waterfall = this.$(".waterfall");
    waterfall.dataset.timings = JSON.stringify({ ...timings, server: server.map(([name, seconds, side]) => ({ name, ms: seconds * 1000, side })) });
    waterfall.innerHTML = rows.map(([name, value, side]) =>
      `<div class="stage ${side}" data-stage="${name}"><span>${name}</span><i style="width:${(100 * (value ?? 0)) / longest}%"></i><b>${value == null ? "–" : ms(value)}</b></div>`).join("");
    const sizes = answer.sizes ?? {};
    const kB = (bytes) => `${(bytes / 1e3).toFixed(0)} kB`;
    this.$(".sizes").textContent = `Ciphertext sent ${kB(sizes.ciphertext_bytes)} · public keys ${(sizes.key_bytes / 1e6).toFixed(1)} MB (once) · result ${kB(sizes.result_bytes)}. The app's server relayed these bytes and could read none of them.`;
  }
}

/** The component's entry point: one TabMode per mounted instance, re-rendered on every ``data``. */
export function mount(component) {
  const { parentElement, data, setTriggerValue } = component;
  let mode = instances.get(parentElement);
  if (!mode) {
    const root = document.createElement("div");
    parentElement.appendChild(root);
    mode = new TabMode(root, data.config);
    instances.set(parentElement, mode);
  }
  mode.sendTrigger = setTriggerValue;
  mode.$(".classify").onclick = () => mode.classify();
  mode.receive(data.answer);
}

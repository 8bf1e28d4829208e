/**
 * A canvas drawing to an MNIST digit, in the browser: a step-for-step port of `to_mnist` in
 * lib/preprocess.py (read that module's doc string for why each step is there). The browser must
 * hand the model the same 784 values the Python app would, so every step copies the Python one,
 * down to the libraries' numerics: scipy's exact Euclidean distance transform, numpy's median and
 * pairwise sums, and Pillow's Lanczos and box resampling of float ('F') images (Resample.c: two
 * separable passes through a float32 intermediate, in the order Pillow 13.0.0 runs them, double sums,
 * no rounding). tests/test_js_preprocess.py runs this module in Node and checks parity with Python:
 * the 784 values come out bit for bit the same on its drawings.
 *
 * An image here is `{ height, width, data }`, `data` row-major (a Float64Array unless noted).
 */

export const EMPTY_MESSAGE = "The canvas is empty: draw a digit first.";
export const SIDE = 28;

const BOX = 20;
const INK_THRESHOLD = 0.15; // contrast with the background that counts as ink for the bounding box
const NOISE_FLOOR = 0.05; // faint contrast below this is treated as background
const MIN_INK_FRACTION = 0.0005; // fewer ink pixels than this share of the image counts as empty
const MIN_INK_PIXELS = 4;
const STROKE_RANGE = [0.1, 0.19]; // stroke width as a share of the digit's longer side
const STROKE_WORK_SIDE = 280; // larger crops are reduced to this before the distance transforms

/** A drawing the app cannot use (empty, too small): mirrors lib.errors.InvalidInput. */
export class InvalidInput extends Error {
  constructor(message) {
    super(message);
    this.name = "InvalidInput";
  }
}

// ---- numpy's numerics ----------------------------------------------------------------------------

// numpy's pairwise summation (pairwise_sum_DOUBLE), which ndarray.sum() uses on contiguous float64.
function pairwiseSum(a, start = 0, n = a.length) {
  if (n < 8) {
    let res = 0;
    for (let i = start; i < start + n; i++) res += a[i];
    return res;
  }
  if (n <= 128) {
    let r0 = a[start], r1 = a[start + 1], r2 = a[start + 2], r3 = a[start + 3];
    let r4 = a[start + 4], r5 = a[start + 5], r6 = a[start + 6], r7 = a[start + 7];
    let i = start + 8;
    for (const end = start + n - (n % 8); i < end; i += 8) {
      r0 += a[i];
      r1 += a[i + 1];
      r2 += a[i + 2];
      r3 += a[i + 3];
      r4 += a[i + 4];
      r5 += a[i + 5];
      r6 += a[i + 6];
      r7 += a[i + 7];
    }
    let res = (r0 + r1 + (r2 + r3)) + (r4 + r5 + (r6 + r7)); // numpy's order
    for (; i < start + n; i++) res += a[i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}

// np.median: the middle value, or the mean of the two middle values for an even count.
function median(values) {
  const sorted = new Float64Array(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// Python's round() on a float: halves go to the even neighbour.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

// ---- Pillow's resampling of float32 ('F') images ---------------------------------------------------

function sinc(x) {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

const LANCZOS = { support: 3, filter: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) };
const BOX_FILTER = { support: 0.5, filter: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };

// Resample.c precompute_coeffs: each output pixel's first input pixel, count and normalised weights.
function precomputeCoeffs(inSize, outSize, { support: baseSupport, filter }) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = baseSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const invFilterscale = 1 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    const k = xx * ksize;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * invFilterscale);
      kk[k + x] = w;
      ww += w;
    }
    if (ww !== 0) {
      for (let x = 0; x < xmax; x++) kk[k + x] /= ww;
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

// Resample.c's horizontal pass on a float32 image: each row to outW pixels, double sums, float32 out.
function resampleRows(src, h, w, outW, filter) {
  const { bounds, kk, ksize } = precomputeCoeffs(w, outW, filter);
  const out = new Float32Array(h * outW);
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[2 * xx];
      const k = xx * ksize;
      let ss = 0;
      for (let x = 0; x < bounds[2 * xx + 1]; x++) ss += src[y * w + x + xmin] * kk[k + x];
      out[y * outW + xx] = ss;
    }
  }
  return out;
}

// Resample.c's vertical pass on a float32 image: each column to outH pixels, double sums, float32 out.
function resampleColumns(src, h, w, outH, filter) {
  const { bounds, kk, ksize } = precomputeCoeffs(h, outH, filter);
  const out = new Float32Array(outH * w);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[2 * yy];
    const ymax = bounds[2 * yy + 1];
    const k = yy * ksize;
    for (let x = 0; x < w; x++) {
      let ss = 0;
      for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * w + x] * kk[k + y];
      out[yy * w + x] = ss;
    }
  }
  return out;
}

// Image.fromarray(x.astype(np.float32)).resize((outW, outH), filter) as Pillow 13.0.0 (pinned in
// requirements.txt) does it: two passes through a float32 intermediate, so their order shows in the
// last bit. 13.0.0 goes horizontal first unless the height shrinks by more than twice as many pixels
// as the width; that rule was measured on the installed wheel (Pillow's main-branch Resample.c
// always goes horizontal first), and tests/test_js_preprocess.py would catch a change.
function pillowResize(image, outW, outH, filter) {
  const { height: h, width: w } = image;
  const src = new Float32Array(image.data);
  let out = src;
  if (outH < h && h - outH > 2 * (w - outW)) {
    out = outH === h ? out : resampleColumns(out, h, w, outH, filter);
    out = outW === w ? out : resampleRows(out, outH, w, outW, filter);
  } else {
    out = outW === w ? out : resampleRows(out, h, w, outW, filter);
    out = outH === h ? out : resampleColumns(out, h, outW, outH, filter);
  }
  return { height: outH, width: outW, data: new Float64Array(out) };
}

// ---- scipy.ndimage ---------------------------------------------------------------------------------

// One row of Felzenszwalb & Huttenlocher's exact squared distance transform (lower envelope of parabolas).
function envelope1d(f, n, d, v, z) {
  let k = -1;
  for (let q = 0; q < n; q++) {
    if (f[q] === Infinity) continue;
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -Infinity;
      z[1] = Infinity;
      continue;
    }
    let s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    while (s <= z[k]) {
      k--;
      s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    }
    k++;
    v[k] = q;
    z[k] = s;
    z[k + 1] = Infinity;
  }
  if (k < 0) {
    d.fill(Infinity, 0, n);
    return;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (z[k + 1] < q) k++;
    d[q] = (q - v[k]) * (q - v[k]) + f[v[k]];
  }
}

// ndimage.distance_transform_edt(mask): exact Euclidean distance of each set pixel to the nearest unset one.
function distanceTransformEdt(mask, h, w) {
  const out = new Float64Array(h * w);
  // columns: squared distance to the nearest unset pixel in the same column (Infinity: none)
  const far = h + w; // farther than any pixel of the image
  for (let x = 0; x < w; x++) {
    let run = far;
    for (let i = x; i < h * w; i += w) {
      run = mask[i] ? Math.min(run + 1, far) : 0;
      out[i] = run;
    }
    run = far;
    for (let i = (h - 1) * w + x; i >= 0; i -= w) {
      run = mask[i] ? Math.min(run + 1, far) : 0;
      const best = Math.min(run, out[i]);
      out[i] = best < far ? best * best : Infinity;
    }
  }
  // rows: the exact squared distance (integers), then its square root, as scipy takes it
  const d = new Float64Array(w);
  const v = new Int32Array(w);
  const z = new Float64Array(w + 1);
  for (let y = 0; y < h; y++) {
    const row = out.subarray(y * w, (y + 1) * w);
    envelope1d(row, w, d, v, z);
    for (let x = 0; x < w; x++) row[x] = Math.sqrt(d[x]);
  }
  return out;
}

// ndimage.maximum_filter(values, size=3): with the default 'reflect' mode a 3x3 window's outside
// cells repeat edge cells already in it, so it is the maximum over the in-bounds neighbours.
function maximumFilter3(values, h, w) {
  const rows = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      rows[i] = Math.max(values[i], x > 0 ? values[i - 1] : -Infinity, x < w - 1 ? values[i + 1] : -Infinity);
    }
  }
  const out = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      out[i] = Math.max(rows[i], y > 0 ? rows[i - w] : -Infinity, y < h - 1 ? rows[i + w] : -Infinity);
    }
  }
  return out;
}

// ---- the steps of lib/preprocess.py ------------------------------------------------------------------

// np.pad(mask, pad): a mask with `pad` unset pixels added on every side.
function padMask(mask, h, w, pad) {
  const pw = w + 2 * pad;
  const out = new Uint8Array((h + 2 * pad) * pw);
  for (let y = 0; y < h; y++) out.set(mask.subarray(y * w, (y + 1) * w), (y + pad) * pw + pad);
  return out;
}

// _grayscale for (H,W,4) uint8: luminance, alpha composited on the tone opposite to the strokes.
function grayscale(rgba, width, height) {
  const n = width * height;
  const gray = new Float64Array(n);
  const alpha = new Float64Array(n);
  const weighted = new Float64Array(n);
  let alphaMax = 0;
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    gray[i] = (rgba[j] / 255) * 0.299 + (rgba[j + 1] / 255) * 0.587 + (rgba[j + 2] / 255) * 0.114;
    alpha[i] = rgba[j + 3] / 255;
    weighted[i] = gray[i] * alpha[i];
    if (alpha[i] > alphaMax) alphaMax = alpha[i];
  }
  if (alphaMax <= 0) return gray; // alpha unused (all zero): the colour channels are the picture
  const strokeTone = pairwiseSum(weighted) / pairwiseSum(alpha);
  const background = strokeTone >= 0.5 ? 0 : 1;
  for (let i = 0; i < n; i++) gray[i] = gray[i] * alpha[i] + background * (1 - alpha[i]);
  return gray;
}

// _ink: contrast in [0, 1] with the background, the median of a border ring.
function ink(gray, h, w) {
  const ring = Math.max(1, Math.floor(Math.min(h, w) / 20));
  const border = new Float64Array(2 * ring * (w + h));
  let n = 0;
  for (let y = 0; y < ring; y++) {
    border.set(gray.subarray(y * w, (y + 1) * w), n);
    border.set(gray.subarray((h - 1 - y) * w, (h - y) * w), n + w);
    n += 2 * w;
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < ring; x++, n += 2) {
      border[n] = gray[y * w + x];
      border[n + 1] = gray[y * w + w - 1 - x];
    }
  }
  const background = median(border);
  const out = new Float64Array(h * w);
  const light = background < 0.5; // light digit on dark: brighter than the background is ink
  const range = Math.max(light ? 1 - background : background, 1e-6);
  for (let i = 0; i < h * w; i++) {
    const value = (light ? gray[i] - background : background - gray[i]) / range;
    const clipped = Math.min(Math.max(value, 0), 1);
    out[i] = clipped < NOISE_FLOOR ? 0 : clipped;
  }
  return out;
}

// _bounding_crop: the part of `image` inside the bounding box of `mask`.
function boundingCrop(image, mask) {
  const { height: h, width: w, data } = image;
  let [top, bottom, left, right] = [h, -1, w, -1];
  for (let y = 0; y < h; y++) {
    const row = mask.subarray(y * w, (y + 1) * w);
    const first = row.indexOf(1);
    if (first < 0) continue;
    top = Math.min(top, y);
    bottom = y;
    left = Math.min(left, first);
    right = Math.max(right, row.lastIndexOf(1));
  }
  const [ch, cw] = [bottom - top + 1, right - left + 1];
  const out = new Float64Array(ch * cw);
  for (let y = 0; y < ch; y++) {
    const start = (top + y) * w + left;
    out.set(data.subarray(start, start + cw), y * cw);
  }
  return { height: ch, width: cw, data: out };
}

// _stroke_width: twice the median distance to the background along the strokes' centre lines.
function strokeWidth(mask, h, w) {
  const inside = distanceTransformEdt(mask, h, w);
  const peaks = maximumFilter3(inside, h, w);
  const ridge = [];
  for (let i = 0; i < h * w; i++) {
    if (mask[i] && inside[i] >= peaks[i]) ridge.push(inside[i]);
  }
  return 2 * median(ridge);
}

// _normalise_stroke: thicken or thin the strokes into STROKE_RANGE, with a one-pixel anti-aliased edge.
function normaliseStroke(crop) {
  let longest = Math.max(crop.height, crop.width);
  if (longest > STROKE_WORK_SIDE) {
    const scale = STROKE_WORK_SIDE / longest;
    const w = Math.max(1, roundHalfEven(crop.width * scale));
    const h = Math.max(1, roundHalfEven(crop.height * scale));
    crop = pillowResize(crop, w, h, BOX_FILTER);
    longest = Math.max(crop.height, crop.width);
  }
  const { height: h, width: w } = crop;
  const mask = new Uint8Array(h * w);
  let any = false;
  for (let i = 0; i < h * w; i++) {
    mask[i] = crop.data[i] > 0.5 ? 1 : 0;
    any ||= mask[i] === 1;
  }
  if (!any) return crop;
  const width = strokeWidth(padMask(mask, h, w, 1), h + 2, w + 2);
  const ratio = width / longest;
  const [low, high] = STROKE_RANGE;
  const target = Math.min(Math.max(ratio, low), high);
  if (target === ratio) return crop;
  // The crop's box grows or shrinks with the strokes: solve target = new width / new longest side.
  const newWidth = (target * (longest - width)) / (1 - target);
  const grow = (newWidth - width) / 2;
  const pad = Math.ceil(Math.max(grow, 0)) + 2;
  const ph = h + 2 * pad;
  const pw = w + 2 * pad;
  const padded = padMask(mask, h, w, pad);
  const outsideMask = new Uint8Array(ph * pw);
  for (let i = 0; i < ph * pw; i++) outsideMask[i] = padded[i] ^ 1;
  const inside = distanceTransformEdt(padded, ph, pw);
  const outside = distanceTransformEdt(outsideMask, ph, pw);
  const restroked = new Float64Array(ph * pw);
  const strokes = new Uint8Array(ph * pw);
  let count = 0;
  for (let i = 0; i < ph * pw; i++) {
    const signed = padded[i] ? inside[i] - 0.5 : 0.5 - outside[i]; // distance to the edge, positive inside
    restroked[i] = Math.min(Math.max(signed + grow + 0.5, 0), 1);
    strokes[i] = restroked[i] > INK_THRESHOLD ? 1 : 0;
    count += strokes[i];
  }
  if (count < MIN_INK_PIXELS) return crop; // thinning would erase it: keep the drawing as it is
  return boundingCrop({ height: ph, width: pw, data: restroked }, strokes);
}

// _fit_box: scale so the longer side is BOX pixels, keeping the aspect ratio, with Lanczos.
function fitBox(image) {
  const { height: h, width: w } = image;
  const scale = BOX / Math.max(h, w);
  const resized = pillowResize(
    image,
    Math.max(1, roundHalfEven(w * scale)),
    Math.max(1, roundHalfEven(h * scale)),
    LANCZOS,
  );
  resized.data = resized.data.map((value) => Math.min(Math.max(value, 0), 1));
  return resized;
}

// _place_centred: centre of mass on (14, 14) in a SIDExSIDE field, the fraction by a bilinear shift.
function placeCentred(digit) {
  const { height: dh, width: dw, data } = digit;
  const total = pairwiseSum(data);
  const byRow = new Float64Array(dh * dw);
  const byCol = new Float64Array(dh * dw);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      byRow[y * dw + x] = data[y * dw + x] * y;
      byCol[y * dw + x] = data[y * dw + x] * x;
    }
  }
  const offsets = [
    [pairwiseSum(byRow) / total, dh],
    [pairwiseSum(byCol) / total, dw],
  ].map(([centre, size]) => {
    const want = SIDE / 2 - centre;
    const whole = Math.min(Math.max(Math.floor(want), 0), SIDE - size);
    const fraction = Math.min(Math.max(want - whole, 0), whole + size < SIDE ? 1 : 0);
    return [whole, fraction];
  });
  const [[top, fy], [left, fx]] = offsets;
  let field = new Float64Array(SIDE * SIDE);
  for (let y = 0; y < dh; y++) field.set(data.subarray(y * dw, (y + 1) * dw), (top + y) * SIDE + left);
  if (fy !== 0 || fx !== 0) {
    // bilinear shift down/right by (fy, fx): weights of the pixel itself and its neighbours
    const [self, up, leftOf, diagonal] = [(1 - fy) * (1 - fx), fy * (1 - fx), (1 - fy) * fx, fy * fx];
    const shifted = field.map((value) => self * value);
    for (let y = 1; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) shifted[y * SIDE + x] += up * field[(y - 1) * SIDE + x];
    }
    for (let y = 0; y < SIDE; y++) {
      for (let x = 1; x < SIDE; x++) shifted[y * SIDE + x] += leftOf * field[y * SIDE + x - 1];
    }
    for (let y = 1; y < SIDE; y++) {
      for (let x = 1; x < SIDE; x++) shifted[y * SIDE + x] += diagonal * field[(y - 1) * SIDE + x - 1];
    }
    field = shifted;
  }
  return field;
}

/**
 * to_mnist: normalise a canvas drawing to an MNIST digit.
 *
 * @param {Uint8ClampedArray|Uint8Array} rgba the pixels as getImageData returns them (width*height*4)
 * @param {number} width
 * @param {number} height
 * @returns {Float32Array} 784 values in [0, 1], light ink on dark, row-major 28x28
 * @throws {InvalidInput} for an empty (or nearly empty) or too small drawing (message as in Python)
 */
export function toMnist(rgba, width, height) {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
    throw new TypeError(`width and height must be non-negative integers, got ${width} and ${height}.`);
  }
  if (!(rgba instanceof Uint8ClampedArray || rgba instanceof Uint8Array)) {
    throw new TypeError("rgba must be a Uint8ClampedArray or Uint8Array (canvas getImageData().data).");
  }
  if (rgba.length !== width * height * 4) {
    throw new RangeError(
      `A ${width}x${height} RGBA image needs ${width * height * 4} bytes (width*height*4), ` +
        `got ${rgba.length}.`,
    );
  }
  if (height < 2 || width < 2) throw new InvalidInput(`The image is too small (${height}x${width} pixels).`);
  const gray = grayscale(rgba, width, height);
  const inked = ink(gray, height, width);
  const mask = new Uint8Array(height * width);
  let count = 0;
  for (let i = 0, threshold = INK_THRESHOLD; i < mask.length; i++) {
    mask[i] = inked[i] > threshold ? 1 : 0;
    count += mask[i];
  }
  if (count < Math.max(MIN_INK_PIXELS, MIN_INK_FRACTION * height * width)) {
    throw new InvalidInput(EMPTY_MESSAGE);
  }

  const crop = normaliseStroke(boundingCrop({ height, width, data: inked }, mask));
  const digit = fitBox(crop);
  if (digit.data.every((value) => value <= 0)) throw new InvalidInput(EMPTY_MESSAGE);
  const field = placeCentred(digit);
  // a thin pen should not look faint: MNIST strokes reach full intensity
  const peak = field.reduce((a, b) => Math.max(a, b));
  return Float32Array.from(field, (value) => Math.min(Math.max(value / peak, 0), 1));
}

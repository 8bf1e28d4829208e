// The browser scheme's client half: Microsoft SEAL 4.1 (node-seal 6.0.3, WebAssembly) in the tab.
//
// A TabKeyPair makes a CKKS key pair for the network's parameters, hands out only the public
// material (12 Galois keys + relinearisation keys, seeded, uncompressed: what seal-python on the
// service can read), encrypts 784 pixels into one ciphertext laid out as the service expects, and
// checks and decrypts the service's result. The secret key stays inside this object: no method
// returns it. Every parameter comes from the Python side's spec (lib/tab_mode.py, tab_config), so
// the tab and the service cannot drift. The same module runs in Node for tests/test_browser_scheme.py.
import SEAL from "node-seal";

const SEAL_MAGIC = 0xa15e;
const HEADER_BYTES = 16;
const COMPR_NONE = 0;
export const NODE_SEAL_VERSION = [4, 1];

let sealLoading = null;

/** node-seal's WebAssembly module, loaded once per tab (about 40 ms). */
export function loadSeal() {
  sealLoading ??= SEAL();
  return sealLoading;
}

/** A refusal the tab shows as it is: what is wrong with the service's answer. */
export class ResultRefused extends Error {}

function readHeader(bytes) {
  if (bytes.length < HEADER_BYTES) throw new ResultRefused("too short to be a SEAL object");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint16(0, true);
  const size = Number(view.getBigUint64(8, true));
  if (magic !== SEAL_MAGIC || view.getUint8(2) !== HEADER_BYTES) throw new ResultRefused("not a SEAL object");
  return { major: view.getUint8(3), minor: view.getUint8(4), compression: view.getUint8(5), size };
}

export class TabKeyPair {
  #seal;
  #context;
  #secretKey;
  #encryptor;
  #decryptor;
  #encoder;
  #config;
  #publicMaterial;

  /** Key generation: a fresh key pair for ``config`` (see tab_config in lib/tab_mode.py). */
  static async create(config) {
    return new TabKeyPair(await loadSeal(), config);
  }

  constructor(seal, config) {
    this.#seal = seal;
    this.#config = config;
    const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
    parms.setPolyModulusDegree(config.poly_modulus_degree);
    parms.setCoeffModulus(seal.CoeffModulus.Create(config.poly_modulus_degree, Int32Array.from(config.coeff_modulus_bits)));
    const started = performance.now();
    this.#context = seal.Context(parms, true, seal.SecurityLevel.tc128);
    if (!this.#context.parametersSet()) throw new Error("SEAL refused the scheme's parameters");
    const contextMade = performance.now();
    const keygen = seal.KeyGenerator(this.#context);
    this.#secretKey = keygen.secretKey();
    const galois = keygen.createGaloisKeysSerializable(Int32Array.from(config.galois_steps));
    const relin = keygen.createRelinKeysSerializable();
    const none = seal.ComprModeType.none;
    this.#publicMaterial = concat(galois.saveArray(none), relin.saveArray(none));
    galois.delete();
    relin.delete();
    const publicKey = keygen.createPublicKey();
    this.#encryptor = seal.Encryptor(this.#context, publicKey, this.#secretKey);
    this.#decryptor = seal.Decryptor(this.#context, this.#secretKey);
    this.#encoder = seal.CKKSEncoder(this.#context);
    publicKey.delete();
    keygen.delete();
    /** How long SEAL's context (parameter checks, NTT tables) and the key generation took, in ms. */
    this.timings = { context: contextMade - started, keygen: performance.now() - contextMade };
  }

  /** The Galois keys then the relinearisation keys, back to back (about 5.2 MB): all the service gets. */
  publicMaterial() {
    return this.#publicMaterial;
  }

  /** 784 pixels in [0, 1] as one seeded, uncompressed SEAL 4.1 ciphertext (about 131 kB). */
  encrypt(pixels) {
    const config = this.#config;
    if (pixels.length !== 784) throw new Error(`expected 784 pixels, got ${pixels.length}`);
    const slots = new Float64Array(config.slot_pixels.length);
    config.slot_pixels.forEach((pixel, slot) => {
      if (pixel >= 0) {
        const value = pixels[pixel];
        if (!(value >= 0 && value <= 1)) throw new Error("every pixel must be a number in [0, 1]");
        slots[slot] = value;
      }
    });
    const plaintext = this.#encoder.encode(slots, 2 ** config.input_scale_bits);
    const serializable = this.#encryptor.encryptSymmetricSerializable(plaintext);
    const bytes = serializable.saveArray(this.#seal.ComprModeType.none);
    serializable.delete();
    plaintext.delete();
    return bytes;
  }

  /** The service's result, checked (size, header, SEAL, level, parts, scale), decrypted: 10 scores.
   * Throws ResultRefused, with what is wrong, for anything this key's service could not have sent. */
  decrypt(bytes) {
    const config = this.#config;
    if (!(bytes instanceof Uint8Array) || bytes.length > config.max_result_bytes) {
      throw new ResultRefused(`the result has ${bytes.length} bytes; this scheme's are at most ${config.max_result_bytes}`);
    }
    const header = readHeader(bytes);
    if (header.major !== NODE_SEAL_VERSION[0] || header.minor !== NODE_SEAL_VERSION[1]) {
      throw new ResultRefused(`the result was written by SEAL ${header.major}.${header.minor}; this tab reads SEAL 4.1`);
    }
    if (header.compression !== COMPR_NONE) throw new ResultRefused("the result is compressed");
    if (header.size !== bytes.length) throw new ResultRefused("the result's header does not match its size");
    const seal = this.#seal;
    const ciphertext = seal.CipherText();
    try {
      try {
        ciphertext.loadArray(this.#context, bytes);
      } catch (error) {
        throw new ResultRefused(`SEAL rejected the result (${errorText(error)})`);
      }
      if (!sameParmsId(ciphertext.parmsId, this.#context.lastParmsId)) {
        throw new ResultRefused("the result is at another level than the service's circuit ends at");
      }
      if (ciphertext.size !== 2 || !ciphertext.isNttForm) throw new ResultRefused("the result is not a two-part ciphertext in NTT form");
      if (ciphertext.scale !== config.result_scale) throw new ResultRefused("the result has a scale this scheme's service does not produce");
      const plaintext = this.#decryptor.decrypt(ciphertext);
      const slots = this.#encoder.decode(plaintext);
      plaintext.delete();
      const scores = Float64Array.from(config.output_slots, (slot) => slots[slot]);
      if (!scores.every((score) => Number.isFinite(score) && Math.abs(score) <= config.score_bound)) {
        throw new ResultRefused("the scores decrypted to values the model cannot produce: the result was not computed on this tab's ciphertext");
      }
      return scores;
    } finally {
      ciphertext.delete();
    }
  }

  /** For the test that proves the claim only: the secret key's bytes, so it can search everything
   * that left the tab for them. The component calls it only when a test installed a probe. */
  secretKeyBytesForProbe() {
    return this.#secretKey.saveArray(this.#seal.ComprModeType.none);
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function sameParmsId(a, b) {
  const x = a.values, y = b.values;
  return x.length === y.length && x.every((value, i) => value === y[i]);
}

function errorText(error) {
  return typeof error === "number" ? `SEAL exception ${error}` : String(error?.message ?? error);
}

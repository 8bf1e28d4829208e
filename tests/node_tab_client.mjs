// The tab's SEAL client (frontend/browser_encryption/src/tab_seal.js) in Node, for the tests: one
// JSON request per line on stdin, one JSON answer per line on stdout.
//   {"cmd": "keygen", "config": {...}}        -> {"public_material": b64, "ms": n}
//   {"cmd": "encrypt", "pixels": [784 floats]} -> {"ciphertext": b64, "ms": n}
//   {"cmd": "decrypt", "result": b64}          -> {"scores": [10 floats]} | {"refused": message}
import { createInterface } from "node:readline";
import { ResultRefused, TabKeyPair } from "../frontend/browser_encryption/src/tab_seal.js";

const b64 = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
let pair = null;

async function answer(request) {
  const started = performance.now();
  switch (request.cmd) {
    case "keygen":
      pair = await TabKeyPair.create(request.config);
      return { public_material: b64(pair.publicMaterial()), ms: performance.now() - started };
    case "encrypt":
      return { ciphertext: b64(pair.encrypt(Float64Array.from(request.pixels))), ms: performance.now() - started };
    case "decrypt":
      try {
        return { scores: Array.from(pair.decrypt(new Uint8Array(Buffer.from(request.result, "base64")))) };
      } catch (error) {
        if (error instanceof ResultRefused) return { refused: error.message };
        throw error;
      }
    default:
      throw new Error(`unknown command ${request.cmd}`);
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  let reply;
  try {
    reply = await answer(JSON.parse(line));
  } catch (error) {
    reply = { error: String(error?.message ?? error) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}

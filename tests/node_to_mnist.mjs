// Runs frontend/browser_encryption/src/to_mnist.js for tests/test_js_preprocess.py (nothing else uses it).
// stdin: {"images": [{"width": W, "height": H, "rgba_b64": "..."}]}
// stdout: {"results": [[784 floats] | {"error": "message"}]}
import { toMnist } from "../frontend/browser_encryption/src/to_mnist.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).images.map(({ width, height, rgba_b64: rgba }) => {
  try {
    return Array.from(toMnist(new Uint8ClampedArray(Buffer.from(rgba, "base64")), width, height));
  } catch (error) {
    return { error: error.message };
  }
});
process.stdout.write(JSON.stringify({ results }));

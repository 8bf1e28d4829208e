// Builds the tab's code (src/) into one ES module that Streamlit serves from static/ (app static
// serving): node-seal's web build with its WebAssembly inlined, to_mnist.js, tab_seal.js, index.js.
// Run by scripts/setup.sh with the pinned esbuild from the root package.json; the output is not
// committed (it is rebuilt from these sources and the locked packages on every fresh set-up).
import { build } from "esbuild";
import { statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const outfile = fileURLToPath(new URL("../../static/browser_encryption.js", import.meta.url));
await build({
  entryPoints: [`${here}src/index.js`],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "eof",
  outfile,
  // node-seal's web build keeps a Node-only branch (require("url"), never taken where location exists).
  external: ["url"],
  logLevel: "warning",
});
console.log(`built ${outfile} (${(statSync(outfile).size / 1048576).toFixed(2)} MB)`);

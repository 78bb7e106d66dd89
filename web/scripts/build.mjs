// Bundles the storefront into dist/: index.html, assets/app.js (every
// TypeScript module and the gRPC-Web client, one ES module) and
// assets/app.css. Envoy serves dist/ on the API's own origin (envoy/README.md).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, "assets"), { recursive: true });
await build({
  entryPoints: [join(root, "src/main.ts")],
  outfile: join(dist, "assets/app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  // Envoy holds every served file in memory: no source map (src/ is the source).
  legalComments: "eof",
  logLevel: "warning",
});
await copyFile(join(root, "src/style.css"), join(dist, "assets/app.css"));
await copyFile(join(root, "src/index.html"), join(dist, "index.html"));

// Mutual TLS in the bootstrap (common/server.ts): with the TLS files
// configured, the server answers only callers holding a certificate from its
// CA. The certificates come from the repository's own CA tool (`make certs`,
// deploy/shopstack), as the stack's do.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { credentials, status as Code, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";

import { loadServerConfig, readTlsFiles } from "../../src/common/config.js";
import { checkHealth } from "../../src/common/healthcheck.js";
import { createLogger } from "../../src/common/logger.js";
import { resolveRepoFile } from "../../src/common/repofile.js";
import { startServer, type RunningServer } from "../../src/common/server.js";

const TIMEOUT_MS = 30_000;

/** Issues a CA and every identity's certificate into runDir/certs; returns a reader of them. */
function makeCerts(runDir: string): (name: string) => Buffer {
  const python = resolveRepoFile(undefined, ".venv/bin/python", "the repository's .venv (make tools)");
  const deploy = path.join(path.dirname(path.dirname(path.dirname(python))), "deploy");
  execFileSync(python, ["-m", "shopstack", "certs", "--run-dir", runDir], {
    env: { ...process.env, PYTHONPATH: deploy },
    stdio: "pipe",
  });
  return (name) => readFileSync(path.join(runDir, "certs", name));
}

const dir = mkdtempSync(path.join(tmpdir(), "tls-test-"));
let server: RunningServer;
let shop: (name: string) => Buffer;
let stranger: (name: string) => Buffer;

before(async () => {
  shop = makeCerts(path.join(dir, "shop"));
  stranger = makeCerts(path.join(dir, "stranger"));
  const certs = path.join(dir, "shop", "certs");
  const config = loadServerConfig(
    {
      SHOP_TLS_CERT_FILE: path.join(certs, "inventory.crt"),
      SHOP_TLS_KEY_FILE: path.join(certs, "inventory.key"),
      SHOP_TLS_CA_FILE: path.join(certs, "ca.crt"),
    },
    "127.0.0.1:0",
  );
  server = await startServer({
    config,
    logger: createLogger({ service: "tls-test" }, "warn", { write: () => true }),
    services: [],
    descriptorSet: resolveRepoFile(undefined, "protos/gen/shop_api.binpb", "SHOP_DESCRIPTOR_SET"),
  });
});

after(async () => {
  await server.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

test("a caller with a certificate from the server's CA is served", async () => {
  const creds = credentials.createSsl(shop("ca.crt"), shop("operator.key"), shop("operator.crt"));
  assert.equal(await checkHealth(server.addr, TIMEOUT_MS, creds), "SERVING");
});

test("callers without a certificate from the server's CA are refused at the handshake", async () => {
  const refused: Record<string, ChannelCredentials> = {
    plaintext: credentials.createInsecure(),
    "no client certificate": credentials.createSsl(shop("ca.crt")),
    "a certificate from another CA": credentials.createSsl(
      shop("ca.crt"),
      stranger("operator.key"),
      stranger("operator.crt"),
    ),
  };
  for (const [what, creds] of Object.entries(refused)) {
    await assert.rejects(checkHealth(server.addr, TIMEOUT_MS, creds), (err: ServiceError) => {
      assert.equal(err.code, Code.UNAVAILABLE, `${what}: ${err.code} ${err.details}`);
      return true;
    });
  }
});

test("TLS needs all three files", () => {
  assert.equal(readTlsFiles({}), undefined);
  assert.throws(() => readTlsFiles({ SHOP_TLS_CERT_FILE: "x.crt" }), /SHOP_TLS_KEY_FILE, SHOP_TLS_CA_FILE/);
});

// Mutual TLS in the bootstrap: with the TLS files configured, the server
// answers only callers holding a certificate from its CA. The certificates
// come from the repository's own CA tool (`make certs`, deploy/shopstack).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { credentials, Metadata, status as Code, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";

import { InventoryServiceClient, type GetStockResponse } from "../src/gen/shop/inventory/v1/inventory_service.js";
import { repoRoot } from "../src/paths.js";
import { deadline, startServer, tempDir, type Running } from "./helpers.js";

/** Issues a CA and every identity's certificate into runDir/certs. */
function makeCerts(runDir: string): (name: string) => Buffer {
  execFileSync(
    path.join(repoRoot, ".venv", "bin", "python"),
    ["-m", "shopstack", "certs", "--run-dir", runDir],
    { env: { ...process.env, PYTHONPATH: path.join(repoRoot, "deploy") }, stdio: "pipe" },
  );
  return (name) => readFileSync(path.join(runDir, "certs", name));
}

function getStock(address: string, creds: ChannelCredentials): Promise<GetStockResponse> {
  const client = new InventoryServiceClient(address, creds);
  return new Promise<GetStockResponse>((resolve, reject) => {
    client.getStock({ skus: ["sku-tote-bag"] }, new Metadata(), deadline(), (err: ServiceError | null, reply) => {
      client.close();
      if (err !== null) {
        reject(err);
        return;
      }
      resolve(reply);
    });
  });
}

let running: Running;
let shop: (name: string) => Buffer;
let stranger: (name: string) => Buffer;
const dirs: (() => void)[] = [];

before(async () => {
  const own = tempDir();
  const other = tempDir();
  dirs.push(own.remove, other.remove);
  shop = makeCerts(own.dir);
  stranger = makeCerts(other.dir);
  running = await startServer(path.join(own.dir, "inventory.db"), {
    tls: { cert: shop("inventory.crt"), key: shop("inventory.key"), ca: shop("ca.crt") },
  });
});

after(async () => {
  await running.stop();
  for (const remove of dirs) {
    remove();
  }
});

test("a caller with a certificate from the server's CA is served", async () => {
  const reply = await getStock(
    running.server.addr,
    credentials.createSsl(shop("ca.crt"), shop("operator.key"), shop("operator.crt")),
  );
  assert.equal(reply.levels[0]?.sku, "sku-tote-bag");
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
    await assert.rejects(getStock(running.server.addr, creds), (err: ServiceError) => {
      assert.equal(err.code, Code.UNAVAILABLE, `${what}: ${err.code} ${err.details}`);
      return true;
    });
  }
});

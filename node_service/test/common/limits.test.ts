// The cap on server streams per client in the bootstrap (common/limits.ts):
// a client past SHOP_MAX_STREAMS_PER_CLIENT open server streams is refused
// with RESOURCE_EXHAUSTED before the handler runs, another client is not, a
// unary call is never counted, and a closed stream frees its slot. The stream
// is grpc.health.v1 Watch, which every server has and which stays open.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  status as Code,
  type Client,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

import { ConfigError, loadServerConfig } from "../../src/common/config.js";
import { clientOf } from "../../src/common/limits.js";
import { createLogger } from "../../src/common/logger.js";
import { resolveRepoFile } from "../../src/common/repofile.js";
import { startServer, type RunningServer } from "../../src/common/server.js";

const TIMEOUT_MS = 30_000;

interface HealthClient extends Client {
  Watch(request: { service: string }, metadata: Metadata): ClientReadableStream<{ status: string }>;
  Check(
    request: { service: string },
    metadata: Metadata,
    callback: (err: ServiceError | null, reply?: { status: string }) => void,
  ): void;
}

let server: RunningServer;
let client: HealthClient;

before(async () => {
  server = await startServer({
    config: loadServerConfig({ SHOP_MAX_STREAMS_PER_CLIENT: "2" }, "127.0.0.1:0"),
    logger: createLogger({ service: "limits-test" }, "warn", { write: () => true }),
    services: [],
    descriptorSet: resolveRepoFile(undefined, "protos/gen/shop_api.binpb", "SHOP_DESCRIPTOR_SET"),
  });
  const Health = makeGenericClientConstructor(healthService, "Health");
  client = new Health(server.addr, credentials.createInsecure()) as unknown as HealthClient;
});

after(async () => {
  client.close();
  await server.shutdown();
});

function as(customer: string): Metadata {
  const metadata = new Metadata();
  metadata.set("x-shop-customer", customer);
  return metadata;
}

/** Opens a Watch; resolves with the open stream once its first message came, or rejects with its error. */
function watch(customer: string): Promise<ClientReadableStream<{ status: string }>> {
  return new Promise((resolve, reject) => {
    const stream = client.Watch({ service: "" }, as(customer));
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error("no answer"));
    }, TIMEOUT_MS);
    stream.once("data", () => {
      clearTimeout(timer);
      resolve(stream);
    });
    stream.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

test("a client past its cap of open server streams is refused; others, and unary calls, are not", async () => {
  const held = [await watch("ada"), await watch("ada")];
  await assert.rejects(watch("ada"), (err: ServiceError) => {
    assert.equal(err.code, Code.RESOURCE_EXHAUSTED, `${String(err.code)} ${err.details}`);
    assert.match(err.details, /SHOP_MAX_STREAMS_PER_CLIENT/);
    return true;
  });
  const other = await watch("grace");
  other.cancel();
  await new Promise<void>((resolve, reject) => {
    client.Check({ service: "" }, as("ada"), (err) => {
      if (err !== null) {
        reject(err);
        return;
      }
      resolve();
    });
  });
  // Closing a stream frees its slot once the server has seen the cancellation.
  const first = held.shift();
  first?.on("error", () => undefined);
  first?.cancel();
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    try {
      held.push(await watch("ada"));
      break;
    } catch (err) {
      assert.equal((err as ServiceError).code, Code.RESOURCE_EXHAUSTED);
      assert.ok(Date.now() < deadline, "a cancelled stream never freed its slot");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  for (const stream of held) {
    stream.on("error", () => undefined);
    stream.cancel();
  }
});

test("a client is its customer, else the address Envoy saw, else its own address", () => {
  const both = new Metadata();
  both.set("x-shop-customer", "ada");
  both.set("x-shop-client-address", "10.0.0.7");
  assert.equal(clientOf(both, "127.0.0.1:5555"), "customer ada");
  const address = new Metadata();
  address.set("x-shop-client-address", "10.0.0.7");
  assert.equal(clientOf(address, "127.0.0.1:5555"), "address 10.0.0.7");
  assert.equal(clientOf(new Metadata(), "127.0.0.1:5555"), "address 127.0.0.1");
});

test("SHOP_MAX_STREAMS_PER_CLIENT must be a whole number", () => {
  assert.equal(loadServerConfig({}, "127.0.0.1:0").maxStreamsPerClient, 0);
  for (const bad of ["-1", "2.5", "many"]) {
    assert.throws(() => loadServerConfig({ SHOP_MAX_STREAMS_PER_CLIENT: bad }, "127.0.0.1:0"), ConfigError);
  }
});

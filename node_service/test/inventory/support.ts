// Shared support of the inventory tests: a real server on a loopback port, a
// client through the generated stub, the service as a child process, and
// assertions on the google.rpc.Status a failed call carried (decoded by the
// one decoder, src/common/errors.ts).
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { credentials, Metadata, status as Code, type ServiceError } from "@grpc/grpc-js";

import type { BadRequest, ErrorInfo } from "../../gen/google/rpc/error_details.js";
import {
  InventoryServiceClient,
  type CommitRequest,
  type CommitResponse,
  type GetStockRequest,
  type GetStockResponse,
  type ReleaseRequest,
  type ReleaseResponse,
  type ReserveRequest,
  type ReserveResponse,
} from "../../gen/shop/inventory/v1/inventory_service.js";
import { decodeRichDetails, decodeStatusDetails } from "../../src/common/errors.js";
import { createLogger } from "../../src/common/logger.js";
import { loadConfig, type Config } from "../../src/inventory/config.js";
import { LOG_IDENTITY } from "../../src/inventory/main.js";
import { createServer, type InventoryServer } from "../../src/inventory/server.js";

/** Generous: the machine is small and busy; no test relies on timing. */
export const DEADLINE_MS = 30_000;

export type LogLine = Record<string, unknown>;

export interface Running {
  server: InventoryServer;
  client: InventoryServiceClient;
  logs: LogLine[];
  dbPath: string;
  stop(): Promise<void>;
}

/** A fresh directory for a database file, removed by the returned function. */
export function tempDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), "inventory-test-"));
  return {
    dir,
    remove: () => {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function testConfig(dbPath: string, overrides: Partial<Config> = {}): Config {
  return {
    ...loadConfig({}),
    listenAddr: "127.0.0.1:0",
    dbPath,
    shutdownGraceMs: 5000,
    logLevel: "debug",
    ...overrides,
  };
}

/** Starts an in-process server (it reports SERVING before this resolves). */
export async function startServer(dbPath: string, overrides: Partial<Config> = {}): Promise<Running> {
  const logs: LogLine[] = [];
  const logger = createLogger(LOG_IDENTITY, "debug", {
    write(line: string) {
      logs.push(JSON.parse(line) as LogLine);
    },
  });
  const server = await createServer(testConfig(dbPath, overrides), logger);
  const client = new InventoryServiceClient(server.addr, credentials.createInsecure());
  return {
    server,
    client,
    logs,
    dbPath,
    stop: async () => {
      client.close();
      await server.shutdown();
    },
  };
}

export function deadline(): { deadline: number } {
  return { deadline: Date.now() + DEADLINE_MS };
}

/** The unary methods of the client, with their request and response types. */
interface UnaryTypes {
  getStock: [GetStockRequest, GetStockResponse];
  reserve: [ReserveRequest, ReserveResponse];
  commit: [CommitRequest, CommitResponse];
  release: [ReleaseRequest, ReleaseResponse];
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: number },
  callback: (err: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls a unary method of the generated client and returns a promise. */
export function unary<N extends keyof UnaryTypes>(
  client: InventoryServiceClient,
  name: N,
  request: UnaryTypes[N][0],
  metadata = new Metadata(),
): Promise<UnaryTypes[N][1]> {
  const method = client[name].bind(client) as unknown as UnaryMethod<UnaryTypes[N][0], UnaryTypes[N][1]>;
  return new Promise((resolve, reject) => {
    method(request, metadata, deadline(), (err, response) => {
      if (err !== null) {
        reject(err);
        return;
      }
      resolve(response);
    });
  });
}

/** The decoded details of a failed call. */
export interface Failure {
  code: Code;
  message: string;
  badRequest?: BadRequest;
  errorInfo?: ErrorInfo;
}

export function decodeFailure(err: ServiceError): Failure {
  const status = decodeStatusDetails(err.metadata);
  assert.ok(status, `expected grpc-status-details-bin on ${Code[err.code]}: ${err.details}`);
  assert.equal(status.code, err.code, "the Status code matches the call's code");
  const { badRequest, errorInfo } = decodeRichDetails(status);
  return {
    code: err.code,
    message: status.message,
    ...(badRequest === undefined ? {} : { badRequest }),
    ...(errorInfo === undefined ? {} : { errorInfo }),
  };
}

/** Awaits a call expected to fail with code and returns its details. */
export async function expectFailure(promise: Promise<unknown>, code: Code): Promise<Failure> {
  try {
    await promise;
  } catch (err) {
    const serviceError = err as ServiceError;
    assert.equal(
      serviceError.code,
      code,
      `expected ${Code[code]}, got ${Code[serviceError.code]}: ${serviceError.details}`,
    );
    return decodeFailure(serviceError);
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/** The field paths of a BadRequest. */
export function fields(failure: Failure): string[] {
  return (failure.badRequest?.fieldViolations ?? []).map((v) => v.field);
}

/** Polls cond until it holds; for conditions with no event to wait on. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = DEADLINE_MS): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) {
      assert.fail(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the clock has passed ms (for reservation expiry). */
export async function sleepUntil(ms: number): Promise<void> {
  const wait = ms - Date.now();
  if (wait > 0) {
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/** The compiled entry point, dist/src/inventory/main.js. */
export const MAIN = fileURLToPath(new URL("../../src/inventory/main.js", import.meta.url));

export interface Child {
  process: ChildProcessWithoutNullStreams;
  lines: LogLine[];
  addr: string;
  exited: Promise<number | null>;
}

/**
 * Starts `node dist/src/inventory/main.js` with env and resolves once it logged
 * "listening" (it reports SERVING right after). Rejects if it exits first.
 */
export function spawnMain(env: Record<string, string>): Promise<Child> {
  const child = spawn(process.execPath, [MAIN], {
    env: { ...process.env, SHOP_LISTEN_ADDR: "127.0.0.1:0", SHOP_LOG_LEVEL: "debug", ...env },
  });
  const lines: LogLine[] = [];
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      resolve(code);
    });
  });
  return new Promise((resolve, reject) => {
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    createInterface({ input: child.stdout }).on("line", (text) => {
      const line = JSON.parse(text) as LogLine;
      lines.push(line);
      if (line["msg"] === "listening") {
        resolve({ process: child, lines, addr: String(line["addr"]), exited });
      }
    });
    void exited.then((code) => {
      reject(new Error(`main exited with ${String(code)} before listening: ${JSON.stringify(lines)} ${stderr}`));
    });
  });
}

/**
 * Fires count concurrent one-unit Reserve calls at sku; returns how many were
 * granted. Any failure but OUT_OF_STOCK rejects.
 */
export async function race(client: InventoryServiceClient, sku: string, prefix: string, count: number): Promise<number> {
  const outcomes = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<"granted" | "out_of_stock">((resolve, reject) => {
          client.reserve(
            { requestId: `${prefix}-${i}`, lines: [{ sku, quantity: 1 }] },
            new Metadata(),
            deadline(),
            (err: ServiceError | null) => {
              if (err === null) {
                resolve("granted");
              } else if (err.code === Code.FAILED_PRECONDITION && decodeFailure(err).errorInfo?.reason === "OUT_OF_STOCK") {
                resolve("out_of_stock");
              } else {
                reject(err);
              }
            },
          );
        }),
    ),
  );
  return outcomes.filter((o) => o === "granted").length;
}

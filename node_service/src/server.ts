// createServer builds and starts the inventory server the way
// docs/conventions.md describes: open the database, register the service,
// health and reflection, bind, log "listening", then report SERVING.
import { readFileSync } from "node:fs";

import {
  ResponderBuilder,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Code,
  type ServerInterceptor,
} from "@grpc/grpc-js";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";

import type { Config } from "./config.js";
import { InventoryServiceService, protobufPackage } from "./gen/shop/inventory/v1/inventory_service.js";
import type { Logger } from "./logger.js";
import { reflectionPackage } from "./reflection.js";
import { createInventoryService } from "./service.js";
import { InventoryStore } from "./store.js";
import { StockWatchHub } from "./watch.js";

/**
 * Protobuf strings must be UTF-8, and the Go and Python servers refuse a
 * request whose string fields are not. The generated decoders read strings
 * through @bufbuild/protobuf's text encoding, which by default replaces bad
 * bytes with U+FFFD and carries on; made strict, decoding throws, and grpc-js
 * answers the call INTERNAL without calling the handler, like the others.
 */
export function rejectInvalidUtf8(): void {
  const lenient = getTextEncoding();
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  // Deprecated in favour of installing a TextDecoder globally, which would make
  // every decoder in the process strict; this is the hook the generated
  // decoders read strings through, and it changes nothing else.
  // eslint-disable-next-line @typescript-eslint/no-deprecated
  configureTextEncoding({ ...lenient, decodeUtf8: (bytes: Uint8Array) => strict.decode(bytes) });
}

/** The full name health reports on, besides the overall server (""). */
export const SERVICE_NAME = `${protobufPackage}.InventoryService`;

const HEALTH_PREFIX = "/grpc.health.v1.Health/";
const ERROR_CODES = new Set<Code>([Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS]);

export interface InventoryServer {
  /** The bound address, host:port, with the real port when 0 was asked. */
  readonly addr: string;
  readonly port: number;
  /** The number of open WatchStock streams. */
  watchCount(): number;
  /**
   * Reports NOT_SERVING, ends watches, lets in-flight calls finish for up to
   * the configured grace, cancels the rest and closes the database. Calling it
   * again returns the same promise.
   */
  shutdown(): Promise<void>;
}

function deadlineMs(deadline: Date | number): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/**
 * Logs one line per finished RPC: method, code, duration_ms and the
 * x-request-id. Health checks log at debug, since Envoy calls them every second.
 */
export function loggingInterceptor(logger: Logger): ServerInterceptor {
  return (method, call) => {
    const started = process.hrtime.bigint();
    let requestId: string | undefined;
    let logged = false;
    const finish = (code: Code): void => {
      if (logged) {
        return;
      }
      logged = true;
      const fields = {
        method: method.path,
        code: Code[code],
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        ...(requestId === undefined ? {} : { request_id: requestId }),
      };
      if (method.path.startsWith(HEALTH_PREFIX)) {
        logger.debug(fields, "rpc");
      } else if (ERROR_CODES.has(code)) {
        logger.error(fields, "rpc");
      } else {
        logger.info(fields, "rpc");
      }
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const value = metadata.get("x-request-id")[0];
        if (typeof value === "string" && value !== "") {
          requestId = value;
        }
        next(metadata);
      })
      .withOnCancel(() => {
        // Reached without a status when the client cancelled or the deadline
        // passed (grpc-js then answers DEADLINE_EXCEEDED itself).
        finish(Date.now() >= deadlineMs(call.getDeadline()) ? Code.DEADLINE_EXCEEDED : Code.CANCELLED);
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .withSendStatus((status, next) => {
        finish(status.code);
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

function bind(server: Server, addr: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(addr, ServerCredentials.createInsecure(), (err, port) => {
      if (err !== null) {
        reject(new Error(`bind ${addr}: ${err.message}`, { cause: err }));
        return;
      }
      resolve(port);
    });
  });
}

/** How often the sweeper expires overdue reservations so watchers see it. */
function sweepIntervalMs(ttlMs: number): number {
  return Math.min(5000, Math.max(50, Math.floor(ttlMs / 2)));
}

/** Opens the database, builds the server and starts it on config.listenAddr. */
export async function createServer(config: Config, logger: Logger): Promise<InventoryServer> {
  rejectInvalidUtf8();
  const store = InventoryStore.open({ dbPath: config.dbPath, seedFile: config.seedFile });
  const hub = new StockWatchHub(store, logger);
  const server = new Server({ interceptors: [loggingInterceptor(logger)] });
  const health = new HealthImplementation({ "": "NOT_SERVING", [SERVICE_NAME]: "NOT_SERVING" });
  let port: number;
  try {
    server.addService(
      InventoryServiceService,
      createInventoryService({ store, hub, logger, reservationTtlMs: config.reservationTtlMs }),
    );
    health.addToServer(server);
    // Reflection serves the whole shop API (from `make protos`) and health.
    new ReflectionService(reflectionPackage(readFileSync(config.descriptorSet))).addToServer(server);
    port = await bind(server, config.listenAddr);
  } catch (err) {
    hub.close();
    server.forceShutdown();
    store.close();
    throw err;
  }

  const sweeper = setInterval(() => {
    try {
      const expired = store.expireDue();
      if (expired > 0) {
        logger.debug({ expired }, "expired reservations");
      }
    } catch (err) {
      logger.error({ err }, "reservation sweep failed");
    }
  }, sweepIntervalMs(config.reservationTtlMs));
  sweeper.unref();

  const addr = `${config.listenAddr.slice(0, config.listenAddr.lastIndexOf(":"))}:${port}`;
  logger.info({ addr }, "listening");
  health.setStatus("", "SERVING");
  health.setStatus(SERVICE_NAME, "SERVING");

  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      health.setStatus("", "NOT_SERVING");
      health.setStatus(SERVICE_NAME, "NOT_SERVING");
      clearInterval(sweeper);
      hub.close();
      let finished = false;
      const done = (): void => {
        if (finished) {
          return;
        }
        finished = true;
        clearTimeout(timer);
        store.close();
        resolve();
      };
      const timer = setTimeout(() => {
        logger.warn({ grace_ms: config.shutdownGraceMs }, "grace period over; cancelling the calls left");
        server.forceShutdown();
        done();
      }, config.shutdownGraceMs);
      server.tryShutdown(() => {
        done();
      });
    });
    return stopping;
  };

  return { addr, port, watchCount: () => hub.size, shutdown };
}

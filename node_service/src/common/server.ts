// The bootstrap every Node shop server shares, as docs/conventions.md
// describes it: the one RPC interceptor (logging, tracing, metrics, limits), grpc.health.v1, server
// reflection, bind, the "listening" line, SERVING, and on shutdown
// NOT_SERVING and a drain bounded by the grace period. It knows nothing about
// any one service: a service passes its registrations and the hooks that end
// its own background work (inventory/server.ts).
import { readFileSync } from "node:fs";

import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";

import type { ServerConfig, TlsFiles } from "./config.js";
import { rpcInterceptor } from "./interceptors.js";
import type { Logger } from "./logger.js";
import { reflectionPackage } from "./reflection.js";
import type { Telemetry } from "./telemetry.js";

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

/** One gRPC service to serve: its full name (health reports on it) and its handlers. */
export interface ServiceRegistration {
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface StartOptions {
  config: ServerConfig;
  logger: Logger;
  services: readonly ServiceRegistration[];
  /** The descriptor set of the whole API (`make protos`), which reflection serves. */
  descriptorSet: string;
  /** Traces and counts every RPC when given (serviceMain always gives it; unit tests may not). */
  telemetry?: Telemetry;
  /**
   * Called once when shutdown begins, right after health turns NOT_SERVING:
   * stop timers and end long-lived streams so they do not hold up the drain.
   */
  onDrain?: () => void;
  /** Called once when the server has stopped, drained or not: close the database. */
  onStopped?: () => void;
}

export interface RunningServer {
  /** The bound address, host:port, with the real port when 0 was asked. */
  readonly addr: string;
  readonly port: number;
  /**
   * Reports NOT_SERVING, runs onDrain, lets in-flight calls finish for up to
   * the configured grace, cancels the rest and runs onStopped. Calling it
   * again returns the same promise.
   */
  shutdown(): Promise<void>;
}

/**
 * Mutual TLS when the configuration names the files: the handshake refuses a
 * client without a certificate from the CA. Plaintext otherwise (tests only).
 */
export function serverCredentials(tls: TlsFiles | undefined): ServerCredentials {
  if (tls === undefined) {
    return ServerCredentials.createInsecure();
  }
  return ServerCredentials.createSsl(tls.ca, [{ cert_chain: tls.cert, private_key: tls.key }], true);
}

function bind(server: Server, addr: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(addr, credentials, (err, port) => {
      if (err !== null) {
        reject(new Error(`bind ${addr}: ${err.message}`, { cause: err }));
        return;
      }
      resolve(port);
    });
  });
}

/**
 * Registers the services, health and reflection, binds config.listenAddr,
 * logs "listening" with the bound address and reports SERVING, for the whole
 * server ("") and for each service's name. A failure (the port is taken, the
 * descriptor set is missing) throws after releasing the server.
 */
export async function startServer(options: StartOptions): Promise<RunningServer> {
  rejectInvalidUtf8();
  const { config, logger } = options;
  const names = ["", ...options.services.map((s) => s.name)];
  // One interceptor does all the per-call work: logging, tracing, metrics, the
  // protocol-error fix and the stream cap (interceptors.ts says why one).
  const interceptors = [
    rpcInterceptor({ logger, telemetry: options.telemetry, maxStreamsPerClient: config.maxStreamsPerClient ?? 0 }),
  ];
  const server = new Server({ interceptors });
  const health = new HealthImplementation(Object.fromEntries(names.map((name) => [name, "NOT_SERVING"])));
  let port: number;
  try {
    for (const service of options.services) {
      server.addService(service.definition, service.implementation);
    }
    health.addToServer(server);
    // Reflection serves the whole shop API (from `make protos`) and health.
    new ReflectionService(reflectionPackage(readFileSync(options.descriptorSet))).addToServer(server);
    port = await bind(server, config.listenAddr, serverCredentials(config.tls));
  } catch (err) {
    server.forceShutdown();
    throw err;
  }

  const addr = `${config.listenAddr.slice(0, config.listenAddr.lastIndexOf(":"))}:${port}`;
  logger.info({ addr, tls: config.tls === undefined ? "off" : "mutual" }, "listening");
  for (const name of names) {
    health.setStatus(name, "SERVING");
  }

  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      for (const name of names) {
        health.setStatus(name, "NOT_SERVING");
      }
      options.onDrain?.();
      let finished = false;
      const done = (): void => {
        if (finished) {
          return;
        }
        finished = true;
        clearTimeout(timer);
        options.onStopped?.();
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

  return { addr, port, shutdown };
}

// What every Node service's entry point does, as Go's server.Main and
// Python's service_main do it: read the configuration (exit 2 naming a bad
// variable), start the server (exit 1 saying why it could not), and on SIGTERM
// or SIGINT shut it down gracefully and exit 0.
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

import type { ServerConfig } from "./config.js";
import { createLogger, closeLogger, type LogIdentity, type Logger } from "./logger.js";
import { Telemetry } from "./telemetry.js";

/** What a service's start function returns: something to shut down. */
export interface Stoppable {
  shutdown(): Promise<void>;
}

/**
 * Runs a service until a signal stops it and resolves to the process's exit
 * code, once every log line is written. loadConfig reads the environment;
 * start builds and starts the server, with the process's telemetry (traces
 * and /metrics, set up here first).
 */
export async function serviceMain<C extends ServerConfig>(
  identity: LogIdentity,
  loadConfig: () => C,
  start: (config: C, logger: Logger, telemetry: Telemetry) => Promise<Stoppable>,
): Promise<number> {
  let config: C;
  try {
    config = loadConfig();
  } catch (err) {
    const logger = createLogger(identity, "info");
    logger.error({ err }, `invalid configuration: ${(err as Error).message}`);
    await closeLogger(logger);
    return 2;
  }
  const logger = createLogger(identity, config.logLevel);
  const telemetry = new Telemetry(identity.service, identity.impl, config);
  let server: Stoppable;
  try {
    await telemetry.serveMetrics();
    server = await start(config, logger, telemetry);
  } catch (err) {
    logger.error({ err }, `start failed: ${(err as Error).message}`);
    await telemetry.shutdown();
    await closeLogger(logger);
    return 1;
  }
  const code = await new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal, grace_ms: config.shutdownGraceMs }, "shutting down");
      server
        .shutdown()
        .then(() => telemetry.shutdown())
        .then(
          () => {
            logger.info("stopped");
            resolve(0);
          },
          (err: unknown) => {
            logger.error({ err }, "shutdown failed");
            resolve(1);
          },
        );
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await closeLogger(logger);
  return code;
}

/** True when the module at moduleUrl (import.meta.url) is the script node was started with. */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv.at(1);
  return script !== undefined && realpathSync(script) === fileURLToPath(moduleUrl);
}

// The inventory service's entry point: read the configuration, start the
// server, and on SIGTERM or SIGINT shut it down gracefully and exit 0.
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Telemetry, telemetryConfig } from "./common/telemetry.js";
import { loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { createServer } from "./server.js";

export async function main(): Promise<number> {
  let config;
  let telemetrySettings;
  try {
    config = loadConfig();
    telemetrySettings = telemetryConfig();
  } catch (err) {
    createLogger("info").error({ err }, `invalid configuration: ${(err as Error).message}`);
    return 2;
  }
  const logger = createLogger(config.logLevel);
  const telemetry = new Telemetry("inventory", "node", telemetrySettings);
  let server;
  try {
    await telemetry.serveMetrics();
    server = await createServer(config, logger, telemetry);
  } catch (err) {
    logger.error({ err }, `start failed: ${(err as Error).message}`);
    await telemetry.shutdown();
    return 1;
  }
  const running = server;
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal, grace_ms: config.shutdownGraceMs }, "shutting down");
      running
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
}

function isMainModule(): boolean {
  const script = process.argv.at(1);
  return script !== undefined && realpathSync(script) === fileURLToPath(import.meta.url);
}

if (isMainModule()) {
  // Exit explicitly: a forced shutdown may leave client sockets that would
  // otherwise keep the process alive.
  process.exit(await main());
}

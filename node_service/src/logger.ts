// Structured JSON logs on stdout, one object per line, with the keys
// docs/conventions.md fixes: time (RFC 3339), level (a name), service, msg.
import { pino, type DestinationStream, type Logger } from "pino";

import type { LogLevel } from "./config.js";

export type { Logger } from "pino";

/**
 * Creates the service's logger. Tests pass a destination to read the lines;
 * otherwise they go to stdout.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "inventory" },
    messageKey: "msg",
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label: string) => ({ level: label }),
    },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

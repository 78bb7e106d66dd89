// Structured JSON logs on stdout, one object per line, with the keys
// docs/conventions.md fixes: time (RFC 3339), level (a name), service, msg,
// and trace_id and span_id inside a traced call.
import { pino, type DestinationStream, type Logger } from "pino";

import { activeTraceIds } from "./common/telemetry.js";
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
    // Inside a traced RPC, every line carries the span's trace_id and span_id.
    mixin: activeTraceIds,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label: string) => ({ level: label }),
    },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

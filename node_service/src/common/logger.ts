// Structured JSON logs on stdout, one object per line, with the keys
// docs/conventions.md fixes: time (RFC 3339), level (a name), service, msg,
// impl for a service that has several implementations, and trace_id and
// span_id inside a traced call.
import { pino, type DestinationStream, type Logger } from "pino";

import { activeTraceIds } from "./telemetry.js";
import type { LogLevel } from "./config.js";

export type { Logger } from "pino";

/** The keys on every line: the service's short name, and its implementation. */
export interface LogIdentity {
  service: string;
  impl?: string;
}

/**
 * Creates a service's logger. Tests pass a destination to read the lines;
 * otherwise they go to stdout.
 */
export function createLogger(identity: LogIdentity, level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { ...identity },
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

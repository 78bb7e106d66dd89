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

/** How long closeLogger waits for the last lines to be written (a stuck pipe must not hold the exit). */
const CLOSE_TIMEOUT_MS = 2000;

/** The asynchronous destination of each logger that writes to stdout. */
const stdoutStreams = new WeakMap<Logger, ReturnType<typeof pino.destination>>();

/**
 * Creates a service's logger. Tests pass a destination to read the lines;
 * otherwise they go to stdout through pino's asynchronous destination: a
 * line is handed to a write on libuv's thread pool, and the lines logged
 * while a write is in flight are joined into the next one, so the event loop
 * never waits on the log file or pipe and a busy server makes one write for
 * many lines. Nothing is lost at exit: the service's main closes the logger
 * (closeLogger) before it returns its exit code, and pino writes out
 * whatever is still queued, synchronously, on the process's 'exit' event.
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
  if (destination !== undefined) {
    return pino(options, destination);
  }
  const stream = pino.destination({ dest: 1, sync: false });
  const logger = pino(options, stream);
  stdoutStreams.set(logger, stream);
  return logger;
}

/**
 * Writes every line the logger has queued and resolves once they are
 * written (or after CLOSE_TIMEOUT_MS); the logger must not be used after.
 * A logger with a destination of the caller's resolves at once.
 */
export function closeLogger(logger: Logger): Promise<void> {
  const stream = stdoutStreams.get(logger);
  if (stream === undefined) {
    return Promise.resolve();
  }
  stdoutStreams.delete(logger);
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    stream.once("close", done);
    stream.once("error", done);
    stream.end();
  });
}

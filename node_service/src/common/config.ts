// The one settings parser of the Node services: every setting is an
// environment variable (docs/conventions.md lists them), read here with the
// meaning every language gives it. A bad value fails start-up with the
// variable's name. A service's own settings (inventory/config.ts) are read
// with the same functions.
import { readFileSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error";

export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** SHOP_SHUTDOWN_GRACE_SECONDS's default, in seconds. */
export const DEFAULT_SHUTDOWN_GRACE_SECONDS = 10;

/** ConfigError names the environment variable whose value is unusable. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable} ${problem}`);
    this.name = "ConfigError";
  }
}

export type Env = NodeJS.ProcessEnv;

/** The variable's value, or fallback when it is unset or blank. */
export function readString(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? fallback : raw;
}

/** The variable's value, or undefined when it is unset or blank. */
export function readOptional(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? undefined : raw;
}

/**
 * A number of seconds, fractions allowed (`1.5`), returned in whole
 * milliseconds. Zero is allowed only when allowZero is set; negative numbers
 * never are. An unset or blank variable gives fallbackSeconds.
 */
export function readSecondsAsMs(env: Env, name: string, fallbackSeconds: number, allowZero: boolean): number {
  const raw = env[name];
  let value = fallbackSeconds;
  if (raw !== undefined && raw.trim() !== "") {
    value = Number(raw);
    if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
      const bound = allowZero ? "zero or more" : "more than zero";
      throw new ConfigError(name, `must be a number of seconds, ${bound} (fractions allowed); got "${raw}"`);
    }
  }
  return Math.round(value * 1000);
}

/** SHOP_LOG_LEVEL-style: debug, info, warn or error, any case. */
export function readLogLevel(env: Env, name: string, fallback: LogLevel): LogLevel {
  const value = readString(env, name, fallback).toLowerCase();
  if (!LOG_LEVELS.includes(value as LogLevel)) {
    throw new ConfigError(name, `must be one of ${LOG_LEVELS.join(", ")}; got "${value}"`);
  }
  return value as LogLevel;
}

/** A host:port listen address. */
export function readListenAddr(env: Env, name: string, fallback: string): string {
  const value = readString(env, name, fallback);
  if (!/^.+:\d+$/.test(value)) {
    throw new ConfigError(name, `must be host:port; got "${value}"`);
  }
  return value;
}

/** A number between 0 and 1 (SHOP_TRACE_SAMPLE_RATIO); fallback when unset. */
export function readRatio(env: Env, name: string, fallback: number): number {
  const raw = readOptional(env, name);
  if (raw === undefined) {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    throw new ConfigError(name, `must be a number between 0 and 1; got "${raw}"`);
  }
  return value;
}

/** A whole number, zero or more (SHOP_MAX_STREAMS_PER_CLIENT); fallback when unset. */
export function readCount(env: Env, name: string, fallback: number): number {
  const raw = readOptional(env, name);
  if (raw === undefined) {
    return fallback;
  }
  const value = Number(raw.trim());
  if (!Number.isInteger(value) || value < 0) {
    throw new ConfigError(name, `must be a whole number, zero or more; got "${raw}"`);
  }
  return value;
}

/** An http(s) URL (SHOP_ZIPKIN_URL), or undefined when unset. */
export function readUrl(env: Env, name: string): string | undefined {
  const raw = readOptional(env, name);
  if (raw !== undefined && !/^https?:\/\/[^/]+/.test(raw)) {
    throw new ConfigError(name, `must be an http(s) URL; got "${raw}"`);
  }
  return raw;
}

/** A server's TLS files, read at start-up. */
export interface TlsFiles {
  /** The server's certificate (its SPIFFE-style identity in the URI SAN), PEM. */
  cert: Buffer;
  key: Buffer;
  /** The CA every client certificate must come from, PEM. */
  ca: Buffer;
}

const TLS_VARIABLES = ["SHOP_TLS_CERT_FILE", "SHOP_TLS_KEY_FILE", "SHOP_TLS_CA_FILE"] as const;

/**
 * SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE and SHOP_TLS_CA_FILE, read: all three
 * set means mutual TLS; none set, undefined (plaintext, which only tests use);
 * some set, or an unreadable file, is a ConfigError naming the variables.
 */
export function readTlsFiles(env: Env): TlsFiles | undefined {
  const paths = TLS_VARIABLES.map((name) => readOptional(env, name));
  const missing = TLS_VARIABLES.filter((_, i) => paths[i] === undefined);
  if (missing.length === TLS_VARIABLES.length) {
    return undefined;
  }
  if (missing.length > 0) {
    throw new ConfigError(missing.join(", "), `must be set too: TLS needs ${TLS_VARIABLES.join(", ")} together`);
  }
  const [cert, key, ca] = TLS_VARIABLES.map((name, i) => {
    try {
      return readFileSync(paths[i] ?? "");
    } catch (err) {
      throw new ConfigError(name, `names a file that cannot be read: ${(err as Error).message}`);
    }
  }) as [Buffer, Buffer, Buffer];
  return { cert, key, ca };
}

/** What every Node server needs to run, whatever its service. */
export interface ServerConfig {
  /** host:port to listen on; port 0 picks a free port. */
  listenAddr: string;
  /** How long SIGTERM waits for in-flight RPCs, in milliseconds. */
  shutdownGraceMs: number;
  logLevel: LogLevel;
  /** Zipkin's /api/v2/spans; undefined exports no spans (they are still made and propagated). */
  zipkinUrl?: string;
  /** Share of the traces started here that are recorded, 0 to 1. */
  traceSampleRatio: number;
  /** host:port serving Prometheus' /metrics; undefined serves none. */
  metricsAddr?: string;
  /** Mutual TLS; undefined means plaintext (tests only). */
  tls?: TlsFiles;
  /** Server streams one client may hold open at once (common/limits.ts); 0 or undefined: no cap. */
  maxStreamsPerClient?: number;
}

/**
 * Reads SHOP_LISTEN_ADDR (defaultAddr when unset), SHOP_SHUTDOWN_GRACE_SECONDS,
 * SHOP_LOG_LEVEL, the three SHOP_TLS_* files and the telemetry settings: SHOP_ZIPKIN_URL,
 * SHOP_TRACE_SAMPLE_RATIO and SHOP_METRICS_ADDR, and SHOP_MAX_STREAMS_PER_CLIENT.
 */
export function loadServerConfig(env: Env, defaultAddr: string): ServerConfig {
  const metricsAddr = readOptional(env, "SHOP_METRICS_ADDR");
  return {
    listenAddr: readListenAddr(env, "SHOP_LISTEN_ADDR", defaultAddr),
    shutdownGraceMs: readSecondsAsMs(env, "SHOP_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS, true),
    logLevel: readLogLevel(env, "SHOP_LOG_LEVEL", "info"),
    tls: readTlsFiles(env),
    zipkinUrl: readUrl(env, "SHOP_ZIPKIN_URL"),
    traceSampleRatio: readRatio(env, "SHOP_TRACE_SAMPLE_RATIO", 1),
    metricsAddr: metricsAddr === undefined ? undefined : readListenAddr(env, "SHOP_METRICS_ADDR", metricsAddr),
    maxStreamsPerClient: readCount(env, "SHOP_MAX_STREAMS_PER_CLIENT", 0),
  };
}

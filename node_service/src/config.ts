// Configuration from the environment, as docs/conventions.md lists it. A bad
// value fails start-up with the variable's name.
import { readFileSync } from "node:fs";
import path from "node:path";

import { repoRoot } from "./paths.js";

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Config {
  /** host:port to listen on; port 0 picks a free port. */
  listenAddr: string;
  /** The SQLite database file, created on first start. */
  dbPath: string;
  /** products.json, read only when the database is new. */
  seedFile: string;
  /** The descriptor set of the whole API, served by reflection. */
  descriptorSet: string;
  /** How long an uncommitted reservation lives, in milliseconds. */
  reservationTtlMs: number;
  /** How long SIGTERM waits for in-flight RPCs, in milliseconds. */
  shutdownGraceMs: number;
  logLevel: LogLevel;
  /**
   * Mutual TLS (SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE, SHOP_TLS_CA_FILE): the
   * server's certificate and key and the CA every client certificate must come
   * from, read at start-up. Undefined means plaintext, which only tests use.
   */
  tls?: TlsFiles;
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

const TLS_VARIABLES = ["SHOP_TLS_CERT_FILE", "SHOP_TLS_KEY_FILE", "SHOP_TLS_CA_FILE"] as const;

function tlsFiles(env: NodeJS.ProcessEnv): TlsFiles | undefined {
  const paths = TLS_VARIABLES.map((name) => (env[name] ?? "").trim());
  const missing = TLS_VARIABLES.filter((_, i) => paths[i] === "");
  if (missing.length === TLS_VARIABLES.length) {
    return undefined;
  }
  if (missing.length > 0) {
    throw new ConfigError(missing.join(", "), `must be set too: TLS needs ${TLS_VARIABLES.join(", ")} together`);
  }
  const [cert, key, ca] = TLS_VARIABLES.map((name, i) => {
    try {
      return readFileSync(paths[i]);
    } catch (err) {
      throw new ConfigError(name, `names a file that cannot be read: ${(err as Error).message}`);
    }
  }) as [Buffer, Buffer, Buffer];
  return { cert, key, ca };
}

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** ConfigError names the environment variable whose value is unusable. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable} ${problem}`);
    this.name = "ConfigError";
  }
}

function seconds(env: NodeJS.ProcessEnv, name: string, fallback: number, allowZero: boolean): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    const bound = allowZero ? "zero or more" : "more than zero";
    throw new ConfigError(name, `must be a number of seconds, ${bound} (fractions allowed); got "${raw}"`);
  }
  return value;
}

function nonEmpty(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? fallback : raw;
}

/** Reads the configuration from env (process.env by default). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const listenAddr = nonEmpty(env, "SHOP_LISTEN_ADDR", "127.0.0.1:50052");
  if (!/^.+:\d+$/.test(listenAddr)) {
    throw new ConfigError("SHOP_LISTEN_ADDR", `must be host:port; got "${listenAddr}"`);
  }
  const logLevel = nonEmpty(env, "SHOP_LOG_LEVEL", "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel as LogLevel)) {
    throw new ConfigError("SHOP_LOG_LEVEL", `must be one of ${LOG_LEVELS.join(", ")}; got "${logLevel}"`);
  }
  return {
    listenAddr,
    dbPath: nonEmpty(env, "SHOP_DB_PATH", "inventory.db"),
    seedFile: nonEmpty(env, "SHOP_SEED_FILE", path.join(repoRoot, "data", "products.json")),
    descriptorSet: nonEmpty(env, "SHOP_DESCRIPTOR_SET", path.join(repoRoot, "protos", "gen", "shop_api.binpb")),
    reservationTtlMs: Math.round(seconds(env, "SHOP_RESERVATION_TTL_SECONDS", 900, false) * 1000),
    shutdownGraceMs: Math.round(seconds(env, "SHOP_SHUTDOWN_GRACE_SECONDS", 10, true) * 1000),
    logLevel: logLevel as LogLevel,
    tls: tlsFiles(env),
  };
}

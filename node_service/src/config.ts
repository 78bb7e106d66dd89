// Configuration from the environment, as docs/conventions.md lists it. A bad
// value fails start-up with the variable's name.
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
  };
}

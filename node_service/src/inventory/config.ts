// The inventory's settings: the common ones (listen address, shutdown grace,
// log level) plus its own, read with the bootstrap's one parser
// (common/config.ts). Every inventory implementation reads the same variables
// with the same meaning (docs/conventions.md).
import {
  loadServerConfig,
  readOptional,
  readSecondsAsMs,
  readString,
  type Env,
  type ServerConfig,
} from "../common/config.js";
import { resolveRepoFile } from "../common/repofile.js";

/** The Node inventory's default address (the stack's inventory port). */
export const DEFAULT_ADDR = "127.0.0.1:50052";

/** SHOP_RESERVATION_TTL_SECONDS's default, in seconds. */
export const DEFAULT_RESERVATION_TTL_SECONDS = 900;

export interface Config extends ServerConfig {
  /** The SQLite database file, created on first start. */
  dbPath: string;
  /** products.json, read only when the database is new. */
  seedFile: string;
  /** The schema every inventory implementation applies. */
  schemaFile: string;
  /** The descriptor set of the whole API, served by reflection. */
  descriptorSet: string;
  /** How long an uncommitted reservation lives, in milliseconds. */
  reservationTtlMs: number;
}

/** Reads the configuration from env (process.env by default). */
export function loadConfig(env: Env = process.env): Config {
  return {
    ...loadServerConfig(env, DEFAULT_ADDR),
    dbPath: readString(env, "SHOP_DB_PATH", "inventory.db"),
    seedFile: resolveRepoFile(readOptional(env, "SHOP_SEED_FILE"), "data/products.json", "SHOP_SEED_FILE"),
    schemaFile: resolveRepoFile(
      readOptional(env, "SHOP_INVENTORY_SCHEMA"),
      "data/inventory_schema.sql",
      "SHOP_INVENTORY_SCHEMA",
    ),
    descriptorSet: resolveRepoFile(
      readOptional(env, "SHOP_DESCRIPTOR_SET"),
      "protos/gen/shop_api.binpb",
      "SHOP_DESCRIPTOR_SET",
    ),
    reservationTtlMs: readSecondsAsMs(env, "SHOP_RESERVATION_TTL_SECONDS", DEFAULT_RESERVATION_TTL_SECONDS, false),
  };
}

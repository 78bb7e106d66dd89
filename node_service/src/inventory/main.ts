// The Node inventory's entry point: the bootstrap's serviceMain with the
// inventory's configuration and server. Every log line carries
// "impl": "node", so a stack running several inventories tells them apart.
import { isMainModule, serviceMain } from "../common/main.js";
import { loadConfig } from "./config.js";
import { createServer } from "./server.js";

/** The keys on every log line of this service. */
export const LOG_IDENTITY = { service: "inventory", impl: "node" };

export function main(): Promise<number> {
  return serviceMain(LOG_IDENTITY, () => loadConfig(), createServer);
}

if (isMainModule(import.meta.url)) {
  // Exit explicitly: a forced shutdown may leave client sockets that would
  // otherwise keep the process alive.
  process.exit(await main());
}

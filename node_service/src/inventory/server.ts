// createServer wires the inventory into the bootstrap (common/server.ts):
// open the database, build the watch hub, the sweeper and the handlers, and
// start the server. Shutdown ends
// the sweeper and the watches before the drain and closes the database after.
import { InventoryServiceService, protobufPackage } from "../../gen/shop/inventory/v1/inventory_service.js";
import type { Logger } from "../common/logger.js";
import { startServer } from "../common/server.js";
import type { Telemetry } from "../common/telemetry.js";
import type { Config } from "./config.js";
import { createInventoryService } from "./service.js";
import { InventoryStore } from "./store.js";
import { StockWatchHub } from "./watch.js";

/** The full name health reports on, besides the overall server (""). */
export const SERVICE_NAME = `${protobufPackage}.InventoryService`;

export interface InventoryServer {
  /** The bound address, host:port, with the real port when 0 was asked. */
  readonly addr: string;
  readonly port: number;
  /** The number of open WatchStock streams. */
  watchCount(): number;
  /**
   * Reports NOT_SERVING, ends watches, lets in-flight calls finish for up to
   * the configured grace, cancels the rest and closes the database. Calling it
   * again returns the same promise.
   */
  shutdown(): Promise<void>;
}

/** How often the sweeper expires overdue reservations so watchers see it. */
function sweepIntervalMs(ttlMs: number): number {
  return Math.min(5000, Math.max(50, Math.floor(ttlMs / 2)));
}

/**
 * Opens the database, builds the server and starts it on config.listenAddr.
 * With telemetry, the inventory series (reservations by outcome, those the
 * sweeper expired, open watchers) are on its registry.
 */
export async function createServer(config: Config, logger: Logger, telemetry?: Telemetry): Promise<InventoryServer> {
  const store = InventoryStore.open({ dbPath: config.dbPath, seedFile: config.seedFile, schemaFile: config.schemaFile });
  const hub = new StockWatchHub(store, logger);
  const reservations = telemetry?.counter(
    "shop_inventory_reservations_total",
    "Reservations by what happened to them: reserved, committed or released.",
    ["outcome"],
  );
  const expired = telemetry?.counter(
    "shop_inventory_reservations_expired_total",
    "Reservations the sweeper expired because they outlived their TTL.",
    [],
  );
  telemetry?.gauge("shop_inventory_watchers", "Open WatchStock streams.", () => hub.size);
  // The sweeper expires overdue reservations even when no call comes, so
  // watchers see the stock come back.
  const sweeper = setInterval(() => {
    try {
      const count = store.expireDue();
      if (count > 0) {
        expired?.inc(count);
        logger.debug({ expired: count }, "expired reservations");
      }
    } catch (err) {
      logger.error({ err }, "reservation sweep failed");
    }
  }, sweepIntervalMs(config.reservationTtlMs));
  sweeper.unref();

  let running;
  try {
    running = await startServer({
      config,
      logger,
      descriptorSet: config.descriptorSet,
      telemetry,
      services: [
        {
          name: SERVICE_NAME,
          definition: InventoryServiceService,
          implementation: createInventoryService({
            store,
            hub,
            logger,
            reservationTtlMs: config.reservationTtlMs,
            onReservation: (outcome) => reservations?.inc({ outcome }),
          }),
        },
      ],
      onDrain: () => {
        clearInterval(sweeper);
        hub.close();
      },
      onStopped: () => {
        store.close();
      },
    });
  } catch (err) {
    clearInterval(sweeper);
    hub.close();
    store.close();
    throw err;
  }

  return { addr: running.addr, port: running.port, watchCount: () => hub.size, shutdown: () => running.shutdown() };
}

// The inventory's business errors: the ErrorInfo reasons documented in
// inventory_service.proto, each with the status code the proto gives it, in
// the inventory's domain. Building and sending them is common/errors.ts.
import { status as Code } from "@grpc/grpc-js";

import { errorInfo, type RpcError } from "../common/errors.js";

/** The ErrorInfo domain of every inventory business error. */
export const ERROR_DOMAIN = "inventory.shop.example";

/** The ErrorInfo reasons documented in inventory_service.proto. */
export type Reason =
  | "OUT_OF_STOCK"
  | "SKU_NOT_FOUND"
  | "RESERVATION_NOT_FOUND"
  | "RESERVATION_EXPIRED"
  | "RESERVATION_RELEASED"
  | "RESERVATION_COMMITTED"
  | "REQUEST_ID_REUSED";

const REASON_CODES: Record<Reason, Code> = {
  OUT_OF_STOCK: Code.FAILED_PRECONDITION,
  SKU_NOT_FOUND: Code.NOT_FOUND,
  RESERVATION_NOT_FOUND: Code.NOT_FOUND,
  RESERVATION_EXPIRED: Code.FAILED_PRECONDITION,
  RESERVATION_RELEASED: Code.FAILED_PRECONDITION,
  RESERVATION_COMMITTED: Code.FAILED_PRECONDITION,
  REQUEST_ID_REUSED: Code.ALREADY_EXISTS,
};

/**
 * A business failure: the code the proto documents for the reason, and an
 * ErrorInfo with the reason, the inventory domain and the metadata.
 */
export function businessError(reason: Reason, message: string, metadata: Record<string, string> = {}): RpcError {
  return errorInfo(REASON_CODES[reason], reason, ERROR_DOMAIN, message, metadata);
}

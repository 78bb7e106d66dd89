// The one module that talks to the shop: the gRPC-Web transport, the headers
// every call carries, and a typed client per service. Every page imports its
// clients from here.
//
// The storefront is served by Envoy's public listener, so the API is on the
// page's own origin (no CORS). Envoy's grpc_web filter turns each call into
// plain gRPC for the services.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { CatalogService } from "../gen/shop/catalog/v1/catalog_service_pb.js";
import { InventoryService } from "../gen/shop/inventory/v1/inventory_service_pb.js";
import { OrderService } from "../gen/shop/orders/v1/order_service_pb.js";
import { CallLog, IMPL_HEADER } from "./calls.js";
import { SessionStore } from "./session.js";

/** Where the API is: the origin that served the page. */
export const BASE_URL = globalThis.location?.origin ?? "https://localhost:8080";

/** Every call the page makes, for the "under the hood" panel. */
export const calls = new CallLog(50);

/** The dev sign-in (session.ts): a token kept in this tab only. */
export const session = new SessionStore(sessionStorage);

/** Which inventory implementation to pin calls to ("" lets Envoy choose). */
let inventoryPin = "";

export function setInventoryPin(impl: string): void {
  inventoryPin = impl;
}

export function getInventoryPin(): string {
  return inventoryPin;
}

/**
 * The headers each call carries, in one place: the signed-in customer's token
 * (every OrderService call needs one; Envoy checks it on the others when
 * sent), and the inventory pin (which Envoy honours only for an operator's
 * token, so the panel offers it only then).
 */
function callHeaders(service: string): Record<string, string> {
  const headers: Record<string, string> = {};
  const signedIn = session.current();
  if (signedIn) headers.authorization = `Bearer ${signedIn.token}`;
  if (service === InventoryService.typeName && inventoryPin) {
    // Envoy routes the call to this implementation while several run.
    headers[IMPL_HEADER] = inventoryPin;
  }
  return headers;
}

const withHeaders: Interceptor = (next) => (req) => {
  for (const [name, value] of Object.entries(callHeaders(req.service.typeName))) {
    req.header.set(name, value);
  }
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: BASE_URL,
  // Binary protobuf on the wire, as gRPC clients send it.
  useBinaryFormat: true,
  interceptors: [calls.interceptor(), withHeaders],
});

export const catalog: Client<typeof CatalogService> = createClient(CatalogService, transport);
export const inventory: Client<typeof InventoryService> = createClient(InventoryService, transport);
export const orders: Client<typeof OrderService> = createClient(OrderService, transport);

/** A deadline for unary calls, in milliseconds (Envoy's route timeouts are longer). */
export const CALL_TIMEOUT_MS = 10_000;
/** PlaceOrder runs a saga across three services; Envoy's route allows 20 s. */
export const PLACE_ORDER_TIMEOUT_MS = 20_000;

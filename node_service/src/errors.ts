// Rich errors as AIP-193 describes them: a google.rpc.Status whose details hold
// a google.rpc.BadRequest or a google.rpc.ErrorInfo, serialized into the
// grpc-status-details-bin trailer. That is what grpc-go's status.WithDetails
// and Python's grpc_status.rpc_status.to_status send, so clients in every
// language decode the same thing (Python: rpc_status.from_call).
import { Metadata, status as Code, type ServiceError, type StatusObject } from "@grpc/grpc-js";

import type { Any } from "./gen/google/protobuf/any.js";
import { BadRequest, ErrorInfo, type BadRequest_FieldViolation } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";

/** The ErrorInfo domain of every inventory business error. */
export const ERROR_DOMAIN = "inventory.shop.example";

/** The trailer that carries the serialized google.rpc.Status. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** The ErrorInfo reasons documented in inventory_service.proto. */
export type Reason =
  | "OUT_OF_STOCK"
  | "SKU_NOT_FOUND"
  | "RESERVATION_NOT_FOUND"
  | "RESERVATION_EXPIRED"
  | "RESERVATION_RELEASED"
  | "RESERVATION_COMMITTED"
  | "REQUEST_ID_REUSED";

const TYPE_URL_PREFIX = "type.googleapis.com/";

function packBadRequest(message: BadRequest): Any {
  return { typeUrl: `${TYPE_URL_PREFIX}google.rpc.BadRequest`, value: Buffer.from(BadRequest.encode(message).finish()) };
}

function packErrorInfo(message: ErrorInfo): Any {
  return { typeUrl: `${TYPE_URL_PREFIX}google.rpc.ErrorInfo`, value: Buffer.from(ErrorInfo.encode(message).finish()) };
}

/**
 * RpcError is a failure meant for the client: a status code, a message a
 * person can act on and the google.rpc.Status details. Handlers throw it and
 * the wrapper in service.ts turns it into the call's status.
 */
export class RpcError extends Error {
  readonly code: Code;
  readonly details: readonly Any[];

  constructor(code: Code, message: string, details: readonly Any[] = []) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.details = details;
  }

  /** The status to hand to a grpc-js callback or call.emit("error"). */
  toStatus(): Partial<StatusObject> & ServiceError {
    const metadata = new Metadata();
    const encoded = Status.encode({ code: this.code, message: this.message, details: [...this.details] }).finish();
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(encoded));
    return Object.assign(new Error(this.message), { code: this.code, details: this.message, metadata });
  }
}

/** One bad field: its path (for example `lines[0].quantity`) and what is wrong. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** INVALID_ARGUMENT with one BadRequest field violation per problem. */
export function invalidArgument(violations: readonly FieldViolation[]): RpcError {
  const fieldViolations: BadRequest_FieldViolation[] = violations.map((v) => ({
    field: v.field,
    description: v.description,
    reason: "",
  }));
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new RpcError(Code.INVALID_ARGUMENT, `The request is invalid: ${summary}.`, [
    packBadRequest({ fieldViolations }),
  ]);
}

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
  return new RpcError(REASON_CODES[reason], message, [packErrorInfo({ reason, domain: ERROR_DOMAIN, metadata })]);
}

/** Decodes the google.rpc.Status in a call's trailers, if there is one. */
export function decodeStatusDetails(metadata: Metadata | undefined): Status | undefined {
  const value = metadata?.get(STATUS_DETAILS_KEY)[0];
  return value instanceof Buffer ? Status.decode(value) : undefined;
}

// Rich errors as AIP-193 describes them: a google.rpc.Status whose details hold
// a google.rpc.BadRequest or a google.rpc.ErrorInfo, serialized into the
// grpc-status-details-bin trailer. That is what grpc-go's status.WithDetails
// and Python's grpc_status.rpc_status.to_status send, so clients in every
// language decode the same thing (Python: rpc_status.from_call). A service's
// own reasons and domain live with the service (inventory/errors.ts).
import { Metadata, status as Code, type ServiceError, type StatusObject } from "@grpc/grpc-js";

import type { Any } from "../../gen/google/protobuf/any.js";
import { BadRequest, ErrorInfo, type BadRequest_FieldViolation } from "../../gen/google/rpc/error_details.js";
import { Status } from "../../gen/google/rpc/status.js";

/** The trailer that carries the serialized google.rpc.Status. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

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
 * the service's handler wrapper turns it into the call's status.
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

/**
 * A business failure: code, and an ErrorInfo with the reason (documented in
 * the service's proto), the service's domain and the metadata.
 */
export function errorInfo(
  code: Code,
  reason: string,
  domain: string,
  message: string,
  metadata: Record<string, string> = {},
): RpcError {
  return new RpcError(code, message, [packErrorInfo({ reason, domain, metadata })]);
}

/** Decodes the google.rpc.Status in a call's trailers, if there is one. */
export function decodeStatusDetails(metadata: Metadata | undefined): Status | undefined {
  const value = metadata?.get(STATUS_DETAILS_KEY)[0];
  return value instanceof Buffer ? Status.decode(value) : undefined;
}

/** The AIP-193 details a google.rpc.Status carries. */
export interface RichDetails {
  badRequest?: BadRequest;
  errorInfo?: ErrorInfo;
  /** The type URL of every detail, known or not, in order. */
  typeUrls: string[];
}

/**
 * Unpacks a google.rpc.Status's BadRequest and ErrorInfo: the one decoder of
 * the details every service sends, for clients and tests alike.
 */
export function decodeRichDetails(status: Status): RichDetails {
  const details: RichDetails = { typeUrls: [] };
  for (const any of status.details) {
    details.typeUrls.push(any.typeUrl);
    if (any.typeUrl === `${TYPE_URL_PREFIX}google.rpc.BadRequest`) {
      details.badRequest = BadRequest.decode(any.value);
    } else if (any.typeUrl === `${TYPE_URL_PREFIX}google.rpc.ErrorInfo`) {
      details.errorInfo = ErrorInfo.decode(any.value);
    }
  }
  return details;
}

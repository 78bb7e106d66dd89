// A failed call as a person can read it: the status message, and the
// google.rpc.Status details the services attach (AIP-193).
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { statusName } from "./calls.js";

export interface Problem {
  /** "NOT_FOUND", "INVALID_ARGUMENT", ... */
  readonly code: string;
  /** The service's own sentence. */
  readonly message: string;
  /** ErrorInfo's reason, e.g. "PRODUCT_NOT_FOUND". */
  readonly reason?: string;
  /** BadRequest's field violations: field path to description. */
  readonly fields: ReadonlyMap<string, string>;
}

export function explain(err: unknown): Problem {
  const error = ConnectError.from(err);
  const fields = new Map<string, string>();
  for (const bad of error.findDetails(BadRequestSchema)) {
    for (const violation of bad.fieldViolations) fields.set(violation.field, violation.description);
  }
  const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
  let message = error.rawMessage;
  if (error.code === Code.Unavailable && !message) message = "The shop cannot be reached right now.";
  return { code: statusName(error.code), message, reason, fields };
}

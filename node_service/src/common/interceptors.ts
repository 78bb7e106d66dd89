// The bootstrap's one server interceptor: everything it does on every RPC, in
// one grpc-js intercepting call (each interceptor is a layer of listener and
// responder objects that every callback of every call passes through, and
// four layers cost more than their work; docs/performance.md, P7):
//
// - one log line per finished RPC, with the fields docs/conventions.md lists;
// - the span and the per-RPC Prometheus series (telemetry.ts), the span
//   active while the handler runs;
// - the protocol-error fix: grpc-js's UNIMPLEMENTED for a malformed request
//   stream becomes INTERNAL, as the other languages answer it;
// - the cap on server streams per client (limits.ts).
//
// What the handler side answers passes them in that order backwards: the
// status is fixed first, then traced, counted and logged, so a refusal of the
// stream cap or a fixed protocol error is traced and logged like any other call.
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Code,
  type Metadata,
  type ServerInterceptor,
} from "@grpc/grpc-js";
import { context } from "@opentelemetry/api";

import { StreamCap } from "./limits.js";
import type { Logger } from "./logger.js";
import type { MethodTelemetry, Telemetry } from "./telemetry.js";

const HEALTH_PREFIX = "/grpc.health.v1.Health/";
const ERROR_CODES = new Set<Code>([Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS]);

// grpc-js's own answer to a unary or server-streaming call whose client
// half-closed without a complete request message (a frame shorter than its
// length prefix, or no message at all), and to one that sent two.
const NO_REQUEST = /^Received (no|a second) request message for /;

function deadlineMs(deadline: Date | number): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/**
 * Gives grpc-js's answer to a malformed request stream the code the gRPC
 * protocol and the Go and Python servers give it. grpc-js answers "Received
 * no request message for ..." (and "a second request message") with
 * UNIMPLEMENTED, which says the method does not exist; the call was a
 * protocol violation by the client, which is INTERNAL (grpc-go: "grpc: ...
 * unexpected EOF"; grpc-java: "Half-closed without a request"). Every other
 * status is returned unchanged.
 */
export function fixProtocolError<S extends { code: Code; details: string }>(status: S): S {
  if (status.code === Code.UNIMPLEMENTED && NO_REQUEST.test(status.details)) {
    return {
      ...status,
      code: Code.INTERNAL,
      details: `The request stream did not hold exactly one complete message: ${status.details}`,
    };
  }
  return status;
}

export interface InterceptorOptions {
  logger: Logger;
  /** Traces and counts every RPC when given. */
  telemetry?: Telemetry;
  /** SHOP_MAX_STREAMS_PER_CLIENT: 0 for no cap. */
  maxStreamsPerClient: number;
}

/** What the interceptor works out once per method. */
interface MethodFacts {
  /** Health checks log at debug, since Envoy calls them every second. */
  health: boolean;
  capped: boolean;
  telemetry?: MethodTelemetry;
}

/**
 * The interceptor every Node server installs (startServer). One log line
 * per finished RPC: method, code, duration_ms and the x-request-id, at info,
 * or error for UNKNOWN, INTERNAL and DATA_LOSS, or debug for health checks.
 */
export function rpcInterceptor(options: InterceptorOptions): ServerInterceptor {
  const { logger, telemetry } = options;
  const cap = new StreamCap(options.maxStreamsPerClient);
  const methods = new Map<string, MethodFacts>();
  return (method, call) => {
    let facts = methods.get(method.path);
    if (facts === undefined) {
      facts = {
        health: method.path.startsWith(HEALTH_PREFIX),
        capped: cap.applies(method.requestStream, method.responseStream),
        telemetry: telemetry?.method(method.path, method.requestStream, method.responseStream),
      };
      methods.set(method.path, facts);
    }
    const { health, capped } = facts;
    const started = process.hrtime.bigint();
    const traced = facts.telemetry === undefined || telemetry === undefined ? undefined : telemetry.call(facts.telemetry);
    let requestId: string | undefined;
    let client: string | undefined;
    let logged = false;

    // The log line's code: for a call that ended without a status, the
    // cancellation's (the series and the span count it as CANCELLED).
    const log = (code: Code): void => {
      if (logged) {
        return;
      }
      logged = true;
      if (client !== undefined) {
        cap.release(client);
        client = undefined;
      }
      const fields = {
        method: method.path,
        code: Code[code],
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        ...(requestId === undefined ? {} : { request_id: requestId }),
      };
      if (health) {
        logger.debug(fields, "rpc");
      } else if (ERROR_CODES.has(code)) {
        logger.error(fields, "rpc");
      } else {
        logger.info(fields, "rpc");
      }
    };
    const within =
      traced === undefined
        ? (fn: () => void): void => {
            fn();
          }
        : (fn: () => void): void => {
            context.with(traced.ctx, fn);
          };

    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata: Metadata, next) => {
        const value = metadata.get("x-request-id")[0];
        if (typeof value === "string" && value !== "") {
          requestId = value;
        }
        traced?.received(metadata);
        within(() => {
          if (capped) {
            const admitted = cap.admit(metadata, call.getPeer());
            if ("refusal" in admitted) {
              traced?.finish(admitted.refusal.code, admitted.refusal.details);
              log(admitted.refusal.code);
              call.sendStatus(admitted.refusal);
              return;
            }
            client = admitted.client;
          }
          next(metadata);
        });
      })
      .withOnReceiveMessage((message, next) => {
        within(() => {
          next(message);
        });
      })
      .withOnReceiveHalfClose((next) => {
        within(() => {
          next();
        });
      })
      .withOnCancel(() => {
        // Reached without a status when the client cancelled or the deadline
        // passed (grpc-js then answers DEADLINE_EXCEEDED itself).
        traced?.finish(Code.CANCELLED, "cancelled by the client or its deadline");
        within(() => {
          log(Date.now() >= deadlineMs(call.getDeadline()) ? Code.DEADLINE_EXCEEDED : Code.CANCELLED);
        });
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .withSendStatus((sent, next) => {
        const status = fixProtocolError(sent);
        traced?.finish(status.code, status.details);
        within(() => {
          log(status.code);
          next(status);
        });
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

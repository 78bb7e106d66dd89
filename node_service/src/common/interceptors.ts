// The interceptors every Node server installs: one log line per finished RPC,
// with the fields docs/conventions.md lists.
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Code,
  type ServerInterceptor,
} from "@grpc/grpc-js";

import type { Logger } from "./logger.js";

const HEALTH_PREFIX = "/grpc.health.v1.Health/";
const ERROR_CODES = new Set<Code>([Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS]);

function deadlineMs(deadline: Date | number): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/**
 * Logs one line per finished RPC: method, code, duration_ms and the
 * x-request-id. Health checks log at debug, since Envoy calls them every second.
 */
export function loggingInterceptor(logger: Logger): ServerInterceptor {
  return (method, call) => {
    const started = process.hrtime.bigint();
    let requestId: string | undefined;
    let logged = false;
    const finish = (code: Code): void => {
      if (logged) {
        return;
      }
      logged = true;
      const fields = {
        method: method.path,
        code: Code[code],
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        ...(requestId === undefined ? {} : { request_id: requestId }),
      };
      if (method.path.startsWith(HEALTH_PREFIX)) {
        logger.debug(fields, "rpc");
      } else if (ERROR_CODES.has(code)) {
        logger.error(fields, "rpc");
      } else {
        logger.info(fields, "rpc");
      }
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const value = metadata.get("x-request-id")[0];
        if (typeof value === "string" && value !== "") {
          requestId = value;
        }
        next(metadata);
      })
      .withOnCancel(() => {
        // Reached without a status when the client cancelled or the deadline
        // passed (grpc-js then answers DEADLINE_EXCEEDED itself).
        finish(Date.now() >= deadlineMs(call.getDeadline()) ? Code.DEADLINE_EXCEEDED : Code.CANCELLED);
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .withSendStatus((status, next) => {
        finish(status.code);
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

// grpc-js's own answer to a unary or server-streaming call whose client
// half-closed without a complete request message (a frame shorter than its
// length prefix, or no message at all), and to one that sent two.
const NO_REQUEST = /^Received (no|a second) request message for /;

/**
 * Gives grpc-js's answer to a malformed request stream the code the gRPC
 * protocol and the Go and Python servers give it. grpc-js answers "Received
 * no request message for ..." (and "a second request message") with
 * UNIMPLEMENTED, which says the method does not exist; the call was a
 * protocol violation by the client, which is INTERNAL (grpc-go: "grpc: ...
 * unexpected EOF"; grpc-java: "Half-closed without a request"). Every other
 * status passes unchanged.
 */
export function protocolErrorInterceptor(): ServerInterceptor {
  return (_method, call) => {
    const responder = new ResponderBuilder()
      .withSendStatus((status, next) => {
        if (status.code === Code.UNIMPLEMENTED && NO_REQUEST.test(status.details)) {
          next({
            ...status,
            code: Code.INTERNAL,
            details: `The request stream did not hold exactly one complete message: ${status.details}`,
          });
          return;
        }
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

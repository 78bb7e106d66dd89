// The cap on server streams one client may hold open at once
// (SHOP_MAX_STREAMS_PER_CLIENT; deploy/stack.toml [limits.services] says why).
// A server-streaming call (WatchStock) holds a slot for as long as it is open;
// Envoy bounds streams per connection and per service but not per client, so
// the server counts them per client: the verified customer Envoy names
// (x-shop-customer), else the address Envoy saw the client connect from
// (x-shop-client-address), else the address of a caller that reached the port
// itself. Past the cap the call ends at once with RESOURCE_EXHAUSTED, before
// the handler runs. Go's server/streamcap.go and Python's common/limits.py
// count the same way.
import {
  type Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as Code,
  type ServerInterceptor,
} from "@grpc/grpc-js";

export const CUSTOMER_HEADER = "x-shop-customer";
export const CLIENT_ADDRESS_HEADER = "x-shop-client-address";

function first(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** Who a call counts against. peer is grpc-js's "host:port" (or "unknown"). */
export function clientOf(metadata: Metadata, peer: string): string {
  const customer = first(metadata, CUSTOMER_HEADER);
  if (customer !== undefined) {
    return `customer ${customer}`;
  }
  const address = first(metadata, CLIENT_ADDRESS_HEADER);
  if (address !== undefined) {
    return `address ${address}`;
  }
  const colon = peer.lastIndexOf(":");
  return `address ${colon > 0 ? peer.slice(0, colon) : peer}`;
}

/**
 * Refuses a client's server-streaming call once it holds max of them; 0 means
 * no cap. Client and bidirectional streams end when their caller stops
 * sending and are left alone.
 */
export function streamCapInterceptor(max: number): ServerInterceptor {
  const open = new Map<string, number>();
  return (method, call) => {
    if (max <= 0 || !method.responseStream || method.requestStream) {
      return new ServerInterceptingCall(call);
    }
    let client: string | undefined;
    const release = (): void => {
      if (client === undefined) {
        return;
      }
      const left = (open.get(client) ?? 1) - 1;
      if (left <= 0) {
        open.delete(client);
      } else {
        open.set(client, left);
      }
      client = undefined;
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const who = clientOf(metadata, call.getPeer());
        const held = open.get(who) ?? 0;
        if (held >= max) {
          call.sendStatus({
            code: Code.RESOURCE_EXHAUSTED,
            details:
              `Too many open streams: ${who} already holds ${String(max)} server streams on this server, ` +
              "the most one client may (SHOP_MAX_STREAMS_PER_CLIENT, deploy/stack.toml [limits.services]); " +
              "close one and retry.",
          });
          return;
        }
        client = who;
        open.set(who, held + 1);
        next(metadata);
      })
      .withOnCancel(release)
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .withSendStatus((status, next) => {
        release();
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

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
import { type Metadata, status as Code } from "@grpc/grpc-js";

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
 * The open server streams of each client, and the refusal past max of them;
 * 0 means no cap. Client and bidirectional streams end when their caller
 * stops sending and are not counted. The bootstrap's interceptor
 * (interceptors.ts) admits a call when its metadata arrives and releases its
 * slot when it ends.
 */
export class StreamCap {
  private readonly open = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Whether calls of this method are counted. */
  applies(requestStream: boolean, responseStream: boolean): boolean {
    return this.max > 0 && responseStream && !requestStream;
  }

  /**
   * Takes a slot for the caller and returns who it counts against, or
   * returns the RESOURCE_EXHAUSTED status to answer when that client holds
   * max streams already.
   */
  admit(metadata: Metadata, peer: string): { client: string } | { refusal: { code: Code; details: string } } {
    const who = clientOf(metadata, peer);
    const held = this.open.get(who) ?? 0;
    if (held >= this.max) {
      return {
        refusal: {
          code: Code.RESOURCE_EXHAUSTED,
          details:
            `Too many open streams: ${who} already holds ${String(this.max)} server streams on this server, ` +
            "the most one client may (SHOP_MAX_STREAMS_PER_CLIENT, deploy/stack.toml [limits.services]); " +
            "close one and retry.",
        },
      };
    }
    this.open.set(who, held + 1);
    return { client: who };
  }

  /** Gives back a slot admit took. */
  release(client: string): void {
    const left = (this.open.get(client) ?? 1) - 1;
    if (left <= 0) {
      this.open.delete(client);
    } else {
      this.open.set(client, left);
    }
  }
}

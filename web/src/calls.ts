// The "under the hood" record: one entry per call the page makes, with what
// the edge said about it. The interceptor fills it; the panel renders it.
import { Code, ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";

/** Envoy names the cluster that served a call in this response header. */
export const IMPL_HEADER = "x-shop-impl";
/** The id Envoy assigns at the edge and every service logs. */
export const REQUEST_ID_HEADER = "x-request-id";
/** The trace id Envoy answers with. */
export const TRACE_ID_HEADER = "x-trace-id";
/** W3C trace context: the page starts a sampled trace for each of its calls. */
export const TRACEPARENT_HEADER = "traceparent";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A new W3C traceparent with its sampled flag set: a person's clicks are few,
 * so every call the page makes is traced whatever the stack's sampling ratio
 * (which is for API traffic), and its "under the hood" row links to it.
 */
export function newTraceparent(random: (bytes: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b)): {
  header: string;
  traceId: string;
} {
  let traceId = "";
  let spanId = "";
  // All-zero ids are invalid in W3C trace context; draw again (one in 2^64).
  while (/^0*$/.test(traceId)) traceId = hex(random(new Uint8Array(16)));
  while (/^0*$/.test(spanId)) spanId = hex(random(new Uint8Array(8)));
  return { header: `00-${traceId}-${spanId}-01`, traceId };
}

export interface Call {
  readonly id: number;
  /** "CatalogService/GetProduct" */
  readonly method: string;
  readonly streaming: boolean;
  readonly startedAt: number;
  /** "OK", "NOT_FOUND", ...; "open" while a stream runs; "pending" before any answer. */
  status: string;
  /** Milliseconds until the answer (unary) or until the stream ended. */
  latencyMs?: number;
  messages: number;
  requestId?: string;
  servedBy?: string;
  traceId?: string;
}

/** "NotFound" (connect's Code name) to "NOT_FOUND" (gRPC's). */
export function statusName(code: Code): string {
  // connect spells it Canceled; gRPC's status is CANCELLED.
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

type Listener = (calls: readonly Call[]) => void;

export class CallLog {
  private entries: Call[] = [];
  private nextId = 1;
  private listeners = new Set<Listener>();

  constructor(
    private readonly limit: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The calls, newest first. */
  list(): readonly Call[] {
    return this.entries;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(method: string, streaming: boolean): Call {
    const call: Call = { id: this.nextId++, method, streaming, startedAt: this.now(), status: "pending", messages: 0 };
    this.entries = [call, ...this.entries].slice(0, this.limit);
    this.changed();
    return call;
  }

  /** Reads the edge's headers (or an error's metadata). */
  headers(call: Call, headers: Headers): void {
    call.requestId = headers.get(REQUEST_ID_HEADER) ?? call.requestId;
    call.servedBy = headers.get(IMPL_HEADER) || call.servedBy;
    call.traceId = headers.get(TRACE_ID_HEADER) ?? call.traceId;
    this.changed();
  }

  message(call: Call): void {
    call.messages++;
    if (call.status === "pending") call.status = "open";
    this.changed();
  }

  finish(call: Call, status: string): void {
    call.status = status;
    call.latencyMs = Math.round(this.now() - call.startedAt);
    this.changed();
  }

  /** A connect interceptor recording every call made through the transport, each in a trace of its own. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      const call = this.start(`${req.service.name}/${req.method.name}`, req.stream || req.method.methodKind !== "unary");
      if (!req.header.has(TRACEPARENT_HEADER)) {
        const trace = newTraceparent();
        req.header.set(TRACEPARENT_HEADER, trace.header);
        call.traceId = trace.traceId;
      }
      let res;
      try {
        res = await next(req);
      } catch (err) {
        const error = ConnectError.from(err);
        this.headers(call, error.metadata);
        this.finish(call, statusName(error.code));
        throw err;
      }
      this.headers(call, res.header);
      if (!res.stream) {
        this.finish(call, "OK");
        return res;
      }
      return { ...res, message: this.follow(call, res) } as StreamResponse;
    };
  }

  private async *follow<O>(call: Call, res: StreamResponse): AsyncIterable<O> {
    try {
      for await (const message of res.message) {
        this.message(call);
        yield message as O;
      }
      this.headers(call, res.trailer);
      this.finish(call, "OK");
    } catch (err) {
      const error = ConnectError.from(err);
      this.finish(call, statusName(error.code));
      throw err;
    } finally {
      // The page stopped reading (it moved on): the call was cancelled.
      if (call.status === "pending" || call.status === "open") this.finish(call, "CANCELLED");
    }
  }

  private changed(): void {
    for (const listener of this.listeners) listener(this.entries);
  }
}

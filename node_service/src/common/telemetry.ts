// Traces and metrics for every Node service, set up once by the bootstrap
// (main.ts creates it from the settings, server.ts installs its interceptor;
// docs/observability.md).
//
// Traces: OpenTelemetry's SDK with a parent-based ratio sampler; the
// bootstrap's one server interceptor (interceptors.ts) makes one span per RPC
// through CallTelemetry (health checks and reflection excepted), continuing
// the caller's W3C traceparent, and keeps it active while the handler runs,
// so log lines carry its ids. With SHOP_ZIPKIN_URL set, spans
// go to Zipkin in batches from a bounded queue: a Zipkin that is down costs
// a dropped batch after the export timeout, never an RPC's time.
//
// Metrics: prom-client, served at /metrics on SHOP_METRICS_ADDR, with the
// per-RPC series of go-grpc-middleware's Prometheus provider
// (grpc_server_started_total, grpc_server_handled_total,
// grpc_server_handling_seconds by grpc_type, grpc_service, grpc_method and
// grpc_code), so one query covers every language.
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";

import {
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Context,
  type Span,
  type SpanOptions,
  type Tracer,
  type TextMapGetter,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace";
import { status as Code, type Metadata } from "@grpc/grpc-js";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

import type { ServerConfig } from "./config.js";

const EXPORT_TIMEOUT_MS = 2000;
const MAX_QUEUE_SIZE = 4096;
const SCHEDULE_DELAY_MS = 500;
const UNTRACED_PREFIXES = ["/grpc.health.v1.", "/grpc.reflection."];
const SERVER_FAULTS = new Set<Code>([Code.UNKNOWN, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS, Code.DEADLINE_EXCEEDED]);

/** Go's names for the codes (codes.Code.String()), as go-grpc-middleware labels them. */
const GO_CODE_NAMES: Partial<Record<number, string>> = {
  [Code.OK]: "OK",
  [Code.CANCELLED]: "Canceled",
  [Code.UNKNOWN]: "Unknown",
  [Code.INVALID_ARGUMENT]: "InvalidArgument",
  [Code.DEADLINE_EXCEEDED]: "DeadlineExceeded",
  [Code.NOT_FOUND]: "NotFound",
  [Code.ALREADY_EXISTS]: "AlreadyExists",
  [Code.PERMISSION_DENIED]: "PermissionDenied",
  [Code.RESOURCE_EXHAUSTED]: "ResourceExhausted",
  [Code.FAILED_PRECONDITION]: "FailedPrecondition",
  [Code.ABORTED]: "Aborted",
  [Code.OUT_OF_RANGE]: "OutOfRange",
  [Code.UNIMPLEMENTED]: "Unimplemented",
  [Code.INTERNAL]: "Internal",
  [Code.UNAVAILABLE]: "Unavailable",
  [Code.DATA_LOSS]: "DataLoss",
  [Code.UNAUTHENTICATED]: "Unauthenticated",
};

const metadataGetter: TextMapGetter<Metadata> = {
  keys: (carrier) => Object.keys(carrier.getMap()),
  get: (carrier, key) => {
    const values = carrier.get(key).filter((v): v is string => typeof v === "string");
    return values.length === 0 ? undefined : values;
  },
};

type RpcKind = "unary" | "client_stream" | "server_stream" | "bidi_stream";
type Labels = Record<"grpc_type" | "grpc_service" | "grpc_method", string>;

/** A method's telemetry facts, the same on every call (Telemetry.method). */
export interface MethodTelemetry {
  readonly path: string;
  readonly labels: Labels;
  readonly handledLabels: Map<Code, Labels & { grpc_code: string }>;
  /** False for health checks and reflection, which get no span. */
  readonly traced: boolean;
  readonly spanOptions: SpanOptions;
}

/**
 * One RPC's span and series. The span (a non-recording one when the sampler
 * says no, which still carries the trace id to the log lines) is made from
 * the call's metadata, continuing its W3C traceparent; ctx is the context
 * the rest of the call runs in. finish records the series and ends the span
 * once, whatever calls it first.
 */
export class CallTelemetry {
  ctx: Context = context.active();
  private span?: Span;
  private readonly started = process.hrtime.bigint();
  private finished = false;

  constructor(
    private readonly telemetry: Telemetry,
    private readonly method: MethodTelemetry,
  ) {}

  /** The call's metadata arrived: its span starts, a child of the caller's when it sent a traceparent. */
  received(metadata: Metadata): void {
    if (!this.method.traced) {
      return;
    }
    const parent = propagation.extract(this.ctx, metadata, metadataGetter);
    this.span = this.telemetry.tracer.startSpan(this.method.path, this.method.spanOptions, parent);
    this.ctx = trace.setSpan(parent, this.span);
  }

  /** The call ended with code (message: the status details, when there were any). */
  finish(code: Code, message?: string): void {
    if (this.finished) {
      return;
    }
    this.finished = true;
    this.telemetry.recordFinished(this.method, code, Number(process.hrtime.bigint() - this.started) / 1e9);
    const span = this.span;
    if (span !== undefined) {
      span.setAttribute("rpc.grpc.status_code", code);
      if (SERVER_FAULTS.has(code)) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: message ?? Code[code] });
      }
      span.end();
    }
  }
}

/** The process's tracer provider, metrics registry and metrics server. */
export class Telemetry {
  readonly registry = new Registry();
  private readonly provider: TracerProvider;
  private readonly started: Counter<"grpc_type" | "grpc_service" | "grpc_method">;
  private readonly handled: Counter<"grpc_type" | "grpc_service" | "grpc_method" | "grpc_code">;
  private readonly seconds: Histogram<"grpc_type" | "grpc_service" | "grpc_method">;
  private metricsServer?: HttpServer;
  private readonly methods = new Map<string, MethodTelemetry>();
  /** The tracer of the server spans (the global provider's, once it is set below). */
  readonly tracer: Tracer;

  constructor(
    readonly service: string,
    readonly impl: string | undefined,
    private readonly config: ServerConfig,
  ) {
    const spanProcessors: SpanProcessor[] = [];
    if (config.zipkinUrl !== undefined) {
      spanProcessors.push(
        new BatchSpanProcessor({
          exporter: new ZipkinExporter({ url: config.zipkinUrl, serviceName: service }),
          maxQueueSize: MAX_QUEUE_SIZE,
          scheduledDelayMillis: SCHEDULE_DELAY_MS,
          exportTimeoutMillis: EXPORT_TIMEOUT_MS,
        }),
      );
    }
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({
        "service.name": service,
        "service.namespace": "shop",
        ...(impl === undefined ? {} : { "shop.impl": impl }),
      }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.traceSampleRatio) }),
      spanProcessors,
    });
    trace.setGlobalTracerProvider(this.provider);
    this.tracer = trace.getTracer("shop.inventory.grpc");
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());

    collectDefaultMetrics({ register: this.registry });
    const labels = ["grpc_type", "grpc_service", "grpc_method"] as const;
    this.started = new Counter({
      name: "grpc_server_started_total",
      help: "RPCs started on the server.",
      labelNames: labels,
      registers: [this.registry],
    });
    this.handled = new Counter({
      name: "grpc_server_handled_total",
      help: "RPCs completed on the server, whatever their status.",
      labelNames: [...labels, "grpc_code"],
      registers: [this.registry],
    });
    this.seconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Time from the start of an RPC to its status, in seconds.",
      labelNames: labels,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
  }

  /** A counter on this service's registry. */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** A gauge whose value is read at scrape time. */
  gauge(name: string, help: string, read: () => number): Gauge {
    return new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /**
   * What the bootstrap's interceptor needs of a method on every call, worked
   * out on its first call and reused: its label values, whether it is traced,
   * its span's name and attributes, and the handled_total labels per code.
   */
  method(path: string, requestStream: boolean, responseStream: boolean): MethodTelemetry {
    let found = this.methods.get(path);
    if (found === undefined) {
      const [service, name] = path.slice(1).split("/", 2) as [string, string];
      const kind: RpcKind =
        requestStream && responseStream
          ? "bidi_stream"
          : requestStream
            ? "client_stream"
            : responseStream
              ? "server_stream"
              : "unary";
      found = {
        path,
        labels: { grpc_type: kind, grpc_service: service, grpc_method: name },
        handledLabels: new Map(),
        traced: !UNTRACED_PREFIXES.some((p) => path.startsWith(p)),
        spanOptions: {
          kind: SpanKind.SERVER,
          attributes: {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            ...(this.impl === undefined ? {} : { "shop.impl": this.impl }),
          },
        },
      };
      this.methods.set(path, found);
    }
    return found;
  }

  /**
   * Starts one RPC's telemetry: counts it in grpc_server_started_total. The
   * span starts when the call's metadata arrives (CallTelemetry.received).
   */
  call(method: MethodTelemetry): CallTelemetry {
    this.started.inc(method.labels);
    return new CallTelemetry(this, method);
  }

  /** Counts a finished RPC in grpc_server_handled_total and grpc_server_handling_seconds. */
  recordFinished(method: MethodTelemetry, code: Code, seconds: number): void {
    let labels = method.handledLabels.get(code);
    if (labels === undefined) {
      labels = { ...method.labels, grpc_code: GO_CODE_NAMES[code] ?? String(code) };
      method.handledLabels.set(code, labels);
    }
    this.handled.inc(labels);
    this.seconds.observe(method.labels, seconds);
  }

  /** Starts serving /metrics; resolves once bound (rejects naming the address). */
  async serveMetrics(): Promise<void> {
    const addr = this.config.metricsAddr;
    if (addr === undefined) {
      return;
    }
    const sep = addr.lastIndexOf(":");
    const host = addr.slice(0, sep);
    const port = Number(addr.slice(sep + 1));
    const server = createHttpServer((req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text: string) => {
          res.writeHead(200, { "content-type": this.registry.contentType }).end(text);
        },
        (err: unknown) => {
          res.writeHead(500).end(String(err));
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err) => { reject(new Error(`serve metrics on ${addr}: ${err.message}`, { cause: err })); });
      server.listen(port, host, () => { resolve(); });
    });
    this.metricsServer = server;
  }

  /**
   * Sends the spans still queued (bounded by the export timeout) and stops
   * serving metrics. A Zipkin that is down loses those spans; it never fails
   * the shutdown.
   */
  async shutdown(): Promise<void> {
    this.metricsServer?.close();
    try {
      await this.provider.shutdown();
    } catch {
      // The last batch could not be exported; nothing else to do with it.
    }
  }
}

/** The trace and span ids of the active span, for log lines; {} outside a span. */
export function activeTraceIds(): { trace_id?: string; span_id?: string } {
  const span = trace.getActiveSpan();
  if (span === undefined) {
    return {};
  }
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}

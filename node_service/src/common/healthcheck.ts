// A grpc.health.v1 probe for the Docker HEALTHCHECK: exits 0 when the server
// at SHOP_LISTEN_ADDR (a wildcard host is probed on loopback) reports SERVING
// for the overall server, 1 otherwise. Any Node service's image uses it. With
// the service's TLS variables set, it connects with the service's own
// certificate, as the server requires.
import {
  credentials,
  loadPackageDefinition,
  type ChannelCredentials,
  type Client,
  type ServiceError,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

import { readListenAddr, readTlsFiles, type TlsFiles } from "./config.js";
import { isMainModule } from "./main.js";

type HealthClient = Client & {
  check(
    request: { service: string },
    options: { deadline: number },
    callback: (err: ServiceError | null, response?: { status: string }) => void,
  ): void;
};
type HealthClientConstructor = new (address: string, creds: ChannelCredentials) => HealthClient;

/** Where to probe: the listen address, with 0.0.0.0 or [::] made loopback. */
export function probeAddress(listenAddr: string): string {
  const port = listenAddr.slice(listenAddr.lastIndexOf(":") + 1);
  const host = listenAddr.slice(0, listenAddr.lastIndexOf(":"));
  if (host === "0.0.0.0" || host === "") {
    return `127.0.0.1:${port}`;
  }
  return host === "[::]" ? `[::1]:${port}` : listenAddr;
}

/** A client that the server's mutual TLS accepts: the service's own certificate. */
export function clientCredentials(tls: TlsFiles | undefined): ChannelCredentials {
  return tls === undefined ? credentials.createInsecure() : credentials.createSsl(tls.ca, tls.key, tls.cert);
}

/** Asks the server's health service; resolves to its status name. */
export function checkHealth(
  address: string,
  timeoutMs: number,
  creds: ChannelCredentials = credentials.createInsecure(),
): Promise<string> {
  const proto = loadPackageDefinition(loadSync(protoPath, { enums: String })) as unknown as {
    grpc: { health: { v1: { Health: HealthClientConstructor } } };
  };
  const client = new proto.grpc.health.v1.Health(address, creds);
  return new Promise((resolve, reject) => {
    client.check({ service: "" }, { deadline: Date.now() + timeoutMs }, (err, response) => {
      client.close();
      if (err !== null) {
        reject(err);
        return;
      }
      resolve(response?.status ?? "UNKNOWN");
    });
  });
}

if (isMainModule(import.meta.url)) {
  const address = probeAddress(readListenAddr(process.env, "SHOP_LISTEN_ADDR", "127.0.0.1:50052"));
  try {
    const status = await checkHealth(address, 3000, clientCredentials(readTlsFiles(process.env)));
    process.stdout.write(`${address}: ${status}\n`);
    process.exitCode = status === "SERVING" ? 0 : 1;
  } catch (err) {
    process.stdout.write(`${address}: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

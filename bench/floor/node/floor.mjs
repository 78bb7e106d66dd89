// The bench's bare @grpc/grpc-js server: grpc.health.v1 Check and nothing
// else, no interceptors, no logging, no telemetry, with the same mutual TLS
// the shop's Node services serve. `make bench` measures it beside the
// services: what grpc-js itself costs per request on this machine is the
// floor each Node service's figures are compared with (docs/performance.md).
//
// It loads @grpc/grpc-js and grpc-health-check from node_service's
// node_modules, so it runs on exactly the versions node_service's
// package-lock.json pins.
//
//   node bench/floor/node/floor.mjs LISTEN_ADDR CERT KEY CA
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const nodeService = fileURLToPath(new URL("../../../node_service/package.json", import.meta.url));
const require = createRequire(nodeService);
const { Server, ServerCredentials } = require("@grpc/grpc-js");
const { HealthImplementation } = require("grpc-health-check");

const [addr, certFile, keyFile, caFile] = process.argv.slice(2);
if (caFile === undefined) {
  console.error("usage: floor.mjs LISTEN_ADDR CERT KEY CA (the floor serves mutual TLS, as the services do)");
  process.exit(2);
}
const credentials = ServerCredentials.createSsl(
  readFileSync(caFile),
  [{ cert_chain: readFileSync(certFile), private_key: readFileSync(keyFile) }],
  true,
);
const server = new Server();
new HealthImplementation({ "": "SERVING" }).addToServer(server);
server.bindAsync(addr, credentials, (err, port) => {
  if (err !== null) {
    console.error(`floor-node: bind ${addr}: ${err.message}`);
    process.exit(1);
  }
  // The bench reads the bound port from this line.
  console.log(`listening ${addr.slice(0, addr.lastIndexOf(":"))}:${port}`);
});
process.on("SIGTERM", () => server.forceShutdown());

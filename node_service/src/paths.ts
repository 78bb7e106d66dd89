// Where the files this package reads at run time live. The compiled code runs
// from dist/src/, so the package root is two levels up and the repository root
// (data/, protos/gen/) one more. The Docker image keeps the same layout.
import { fileURLToPath } from "node:url";

/** The node_service directory. */
export const packageRoot = fileURLToPath(new URL("../../", import.meta.url));

/** The repository root, which holds data/ and protos/gen/. */
export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** The shared inventory schema every implementation applies. */
export const schemaFile = fileURLToPath(new URL("../../../data/inventory_schema.sql", import.meta.url));

// Where a service finds the repository files it reads at start-up (the seed,
// the shared SQL schema, the descriptor set) when no path is configured, the
// one way docs/conventions.md fixes for every language: the path relative to
// the repository root is looked for in the working directory and then in each
// of its parents, so a service started from the root, from its package or
// from the Docker image's /app/<package> finds the same file.
import { statSync } from "node:fs";
import path from "node:path";

import { ConfigError } from "./config.js";

/**
 * Returns configured when it is set, and otherwise rel (for example
 * `data/products.json`) searched for in dir (the working directory by default)
 * and then in each of dir's parents. variable names the setting, for the error
 * that says what was looked for.
 */
export function resolveRepoFile(configured: string | undefined, rel: string, variable: string, dir = process.cwd()): string {
  if (configured !== undefined && configured.trim() !== "") {
    return configured;
  }
  for (let d = path.resolve(dir); ; ) {
    const candidate = path.join(d, rel);
    try {
      statSync(candidate);
      return candidate;
    } catch {
      // not here; try the parent
    }
    const parent = path.dirname(d);
    if (parent === d) {
      throw new ConfigError(variable, `is not set and there is no ${rel} in ${dir} or any parent directory`);
    }
    d = parent;
  }
}

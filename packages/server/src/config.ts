import { readFileSync } from "node:fs";
import { checkName } from "@ratequeue/core";
import { type LimitChange, parseLimitChange } from "./limits.js";

/** One resource's limits in a config file, in the namespace of an API key (or a namespace id). */
export interface ConfiguredLimits {
  /** The namespace: that of this API key… */
  apiKey?: string;
  /** …or a namespace id as the admin API shows it. */
  namespace?: string;
  resource: string;
  change: LimitChange;
}

/** What a config file (`--config ratequeue.json`) holds. */
export interface ServerConfig {
  limits: ConfiguredLimits[];
}

const SHAPE =
  '{"limits": [{"apiKey": "KEY" (or "namespace": "ID"), "resource": "NAME", "capacity": N, "concurrency": N, "rates": [{"limit": N, "window": ms, "kind": "sliding", "counts": "requests"}], "lanes": {"strategy": "fair", "weights": {"LANE": N}, "reserved": {"LANE": N}}}]}';

/**
 * Reads and checks a config file. Every mistake is an error that names the file, the place in it
 * (`limits[2].rates[0].window`) and what to write instead; nothing is applied from a file with one.
 */
export function readConfig(path: string): ServerConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(`cannot read the config file ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new Error(`the config file ${path} is not JSON: ${(error as Error).message}`);
  }
  return parseConfig(raw, path);
}

/** Checks a config (from a file named `where`, or given to `startServer`). */
export function parseConfig(raw: unknown, where = "config"): ServerConfig {
  const fail = (at: string, detail: string): never => {
    throw new Error(`${where}: ${at} ${detail}`);
  };
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    fail("the top level", `must be an object: ${SHAPE}`);
  const top = raw as Record<string, unknown>;
  for (const key of Object.keys(top))
    if (key !== "limits" && key !== "$schema")
      fail(JSON.stringify(key), `is not a config field: ${SHAPE}`);
  const entries = top.limits ?? [];
  if (!Array.isArray(entries)) return fail("limits", `must be an array: ${SHAPE}`);
  const limits: ConfiguredLimits[] = [];
  const seen = new Set<string>();
  for (const [i, entry] of entries.entries()) {
    const at = `limits[${i}]`;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry))
      fail(at, `must be an object: ${SHAPE}`);
    const { apiKey, namespace, resource, ...rest } = entry as Record<string, unknown>;
    if ((apiKey === undefined) === (namespace === undefined))
      fail(at, 'must name its namespace by "apiKey" or by "namespace" (an id), one of the two');
    for (const [field, value] of Object.entries({ apiKey, namespace }))
      if (value !== undefined && (typeof value !== "string" || value === ""))
        fail(`${at}.${field}`, "must be a non-empty string");
    if (typeof resource !== "string") return fail(`${at}.resource`, "must be a resource name");
    const badName = checkName(resource);
    if (badName) fail(`${at}.resource`, badName);
    const change = parseLimitChange(rest);
    if ("error" in change) return fail(`${at}.${change.field}`, `is wrong: ${change.error}`);
    const key = `${apiKey ?? ""}\0${namespace ?? ""}\0${resource}`;
    if (seen.has(key)) fail(at, `sets ${JSON.stringify(resource)} a second time`);
    seen.add(key);
    limits.push({
      ...(apiKey === undefined ? {} : { apiKey: apiKey as string }),
      ...(namespace === undefined ? {} : { namespace: namespace as string }),
      resource,
      change,
    });
  }
  return { limits };
}

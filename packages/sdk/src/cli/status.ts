/**
 * `ratequeue status [NAME]`: what holds and waits on a RateQueue server, from its admin API
 * (`/v1/admin/...`, an admin key: `--admin-key` or RATEQUEUE_ADMIN_KEY). Without NAME: the
 * namespaces and each one's busiest resources; with NAME: that resource's holders and its line.
 */
import { parseArgs } from "node:util";

export const STATUS_USAGE = `Usage: ratequeue status [NAME] [options]

Shows what holds and waits on a RateQueue server (its admin API). Without NAME: every namespace
with its busiest resources. With NAME: that resource's holders and its line, in order.

  --namespace ID       the namespace of NAME (an id or its first 12+ characters, as listed);
                       default: the one namespace that has NAME
  --top N              resources shown per namespace (default 10)
  --url URL            the server (default: RATEQUEUE_URL, else http://127.0.0.1:7420)
  --admin-key KEY      an admin key of the server (default: RATEQUEUE_ADMIN_KEY); not needed
                       against a server in open development mode
  -h, --help           show this help
`;

interface Namespaces {
  namespaces: Array<{ id: string; resources: number; active: number; queued: number }>;
}
interface Resources {
  total: number;
  resources: Array<{
    name: string;
    capacity: number;
    used: number;
    active: number;
    queued: number;
  }>;
}
interface Detail {
  name: string;
  capacity: number;
  used: number;
  active: number;
  queued: number;
  holders: Array<{
    id: string;
    session: string | null;
    address: string | null;
    fencingToken: number;
    heldMs: number;
    expiresInMs: number;
    load: number;
  }>;
  line: Array<{
    id: string;
    session: string | null;
    address: string | null;
    priority: number;
    waitedMs: number;
    away: boolean;
    load: number;
  }>;
}

/** Runs `ratequeue status`; resolves with the exit code (2: usage, 1: the server refused or is not there). */
export async function status(argv: string[], out: (text: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      namespace: { type: "string" },
      top: { type: "string" },
      url: { type: "string" },
      "admin-key": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    out(STATUS_USAGE);
    return 0;
  }
  if (positionals.length > 1)
    throw new UsageError(`one resource name at most, got ${positionals.length}`);
  const top = values.top === undefined ? 10 : Number(values.top);
  if (!Number.isInteger(top) || top < 1 || top > 1000)
    throw new UsageError(
      `--top must be a whole number from 1 to 1000, got ${JSON.stringify(values.top)}`,
    );
  const base = (values.url ?? process.env.RATEQUEUE_URL ?? "http://127.0.0.1:7420").replace(
    /\/+$/,
    "",
  );
  const key = values["admin-key"] ?? process.env.RATEQUEUE_ADMIN_KEY ?? "status";
  const get = async <T>(path: string): Promise<T | undefined> => {
    const res = await fetch(`${base}/v1/admin${path}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    if (res.status === 404) return undefined;
    const body = (await res.json().catch(() => ({}))) as { detail?: string };
    if (!res.ok)
      throw new Error(`the server answered ${res.status}: ${body.detail ?? res.statusText}`);
    return body as T;
  };
  const { namespaces } = (await get<Namespaces>("/namespaces"))!;
  const name = positionals[0];
  if (name === undefined) {
    if (namespaces.length === 0) {
      out("Nothing holds or waits on this server.\n");
      return 0;
    }
    for (const ns of namespaces) {
      const page = (await get<Resources>(`/namespaces/${ns.id}/resources?limit=${top}`))!;
      out(
        `namespace ${ns.id.slice(0, 12)}: ${ns.resources} resources, ${ns.active} holding, ${ns.queued} waiting\n`,
      );
      out(
        table(
          ["RESOURCE", "CAPACITY", "USED", "HOLDING", "WAITING"],
          page.resources.map((r) => [r.name, r.capacity, r.used, r.active, r.queued]),
        ),
      );
      if (page.total > page.resources.length)
        out(`  … and ${page.total - page.resources.length} more\n`);
      out("\n");
    }
    return 0;
  }
  const path = (ns: string) =>
    `/namespaces/${encodeURIComponent(ns)}/resources/${encodeURIComponent(name)}`;
  let found: Array<[string, Detail]> = [];
  if (values.namespace !== undefined) {
    const detail = await get<Detail>(path(values.namespace));
    if (detail) found = [[values.namespace, detail]];
  } else {
    for (const ns of namespaces) {
      const detail = await get<Detail>(path(ns.id));
      if (detail) found.push([ns.id, detail]);
    }
  }
  if (found.length === 0) {
    out(`Nothing holds or waits on ${JSON.stringify(name)}.\n`);
    return 0;
  }
  if (found.length > 1)
    throw new UsageError(
      `${JSON.stringify(name)} is in ${found.length} namespaces: choose one with --namespace (${found.map(([id]) => id.slice(0, 12)).join(", ")})`,
    );
  const [ns, d] = found[0]!;
  out(
    `${d.name} (namespace ${ns.slice(0, 12)}): capacity ${d.capacity}, ${d.used} used, ${d.active} holding, ${d.queued} waiting\n\n`,
  );
  out(
    table(
      ["HOLDER", "LOAD", "TOKEN", "HELD", "EXPIRES IN", "ADDRESS", "SESSION"],
      d.holders.map((h) => [
        h.id,
        h.load,
        h.fencingToken,
        ms(h.heldMs),
        ms(h.expiresInMs),
        h.address ?? "-",
        h.session ?? "-",
      ]),
    ),
  );
  out("\n");
  out(
    table(
      ["#", "WAITER", "LOAD", "PRIORITY", "WAITED", "AWAY", "ADDRESS", "SESSION"],
      d.line.map((w, i) => [
        i + 1,
        w.id,
        w.load,
        w.priority,
        ms(w.waitedMs),
        w.away ? "yes" : "no",
        w.address ?? "-",
        w.session ?? "-",
      ]),
    ),
  );
  if (d.queued > d.line.length) out(`  … and ${d.queued - d.line.length} more\n`);
  return 0;
}

export class UsageError extends Error {}

function ms(n: number): string {
  return n < 1_000
    ? `${n} ms`
    : n < 120_000
      ? `${(n / 1_000).toFixed(1)} s`
      : `${Math.round(n / 60_000)} min`;
}

/** Columns padded to their widest cell; "(none)" under the header when there are no rows. */
function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => r[c]!.length)));
  const line = (r: string[]) =>
    `  ${r
      .map((cell, c) => cell.padEnd(widths[c]!))
      .join("  ")
      .trimEnd()}\n`;
  return cells.map(line).join("") + (rows.length === 0 ? "  (none)\n" : "");
}

/**
 * `pnpm test:chaos`: several client processes acquire, hold, release and abandon locks at
 * random (capacities 1 and 3) while the harness SIGKILLs clients — and, with
 * CHAOS_SERVER_KILLS=1, the server, restarting it on the same port and data directory. Every holder writes through
 * a fenced register that rejects stale tokens. The checker then prints grants, kills, restarts,
 * overlaps among holders not told they lost their lease, stale writes accepted, and waiters stuck
 * at the end; the run fails unless the last three are 0.
 *
 *   CHAOS_SECONDS (default 60), CHAOS_CLIENTS (default 6), CHAOS_SERVER_KILLS (default 0), CHAOS_SEED
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, type Hold, type Write } from "./check.js";
import { RESOURCES } from "./resources.js";

export interface ChaosOptions {
  seconds: number;
  clients: number;
  serverKills: boolean;
  seed: number;
  /** The server's --recovery-window, in ms. Default: the server's (poll window + repoll grace). */
  recoveryWindow?: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  grants: number;
  clientKills: number;
  serverRestarts: number;
  overlaps: number;
  staleWritesAccepted: number;
  staleWritesRejected: number;
  waitersStuck: number;
  leasesLost: number;
  errors: Record<string, number>;
}

const CLIENT = fileURLToPath(new URL("./client.ts", import.meta.url));
const CLI = fileURLToPath(new URL("../packages/server/src/cli.ts", import.meta.url));
const CAPACITIES = Object.fromEntries(RESOURCES.map((r) => [r.name, r.capacity]));

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  let seed = o.seed;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };

  // The fenced register: accepts a write only if its token is the highest seen for the name.
  const highest = new Map<string, number>();
  const register = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const { name, token } = JSON.parse(body) as { name: string; token: number };
      const ok = token >= (highest.get(name) ?? 0);
      if (ok) highest.set(name, token);
      res.writeHead(ok ? 200 : 409).end();
    });
  });
  await new Promise<void>((r) => register.listen(0, "127.0.0.1", r));
  const registerUrl = `http://127.0.0.1:${(register.address() as { port: number }).port}/`;

  // The server, restartable on the same port and data directory.
  const dataDir = mkdtempSync(join(tmpdir(), "ratequeue-chaos-"));
  let port = 0;
  let server: ChildProcess | undefined;
  const startServer = async () => {
    const child = spawn(
      process.execPath,
      [
        ...[
          "--import",
          "tsx",
          CLI,
          "--port",
          String(port),
          "--api-key",
          "chaos",
          "--data-dir",
          dataDir,
        ],
        ...(o.recoveryWindow === undefined ? [] : ["--recovery-window", String(o.recoveryWindow)]),
      ],
      {
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (d: string) => {
        const m = /http:\/\/127\.0\.0\.1:(\d+)/.exec(d);
        if (m) resolve(m[0]);
      });
      child.once("exit", (code) => reject(new Error(`server exited (${code})`)));
    });
    port = Number(new URL(url).port);
    server = child;
    return url;
  };
  const url = await startServer();

  const holds = new Map<string, Hold>(); // key: client/token
  const writes: Write[] = [];
  const errors: Record<string, number> = {};
  const report: ChaosReport = {
    grants: 0,
    clientKills: 0,
    serverRestarts: 0,
    overlaps: 0,
    staleWritesAccepted: 0,
    staleWritesRejected: 0,
    waitersStuck: 0,
    leasesLost: 0,
    errors,
  };
  const clients = new Map<string, ChildProcess>();
  const killedAt = new Map<string, number>();
  let n = 0;
  const spawnClient = () => {
    const id = `c${n++}`;
    const child = fork(CLIENT, [url, registerUrl, String(Math.floor(random() * 2 ** 31))], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    child.on(
      "message",
      (m: {
        type: string;
        name: string;
        token: number;
        at: number;
        accepted?: boolean;
        kind?: string;
      }) => {
        const key = `${id}/${m.token}`;
        if (m.type === "grant") {
          report.grants++;
          // A message sent just before a SIGKILL can arrive after the harness recorded the
          // kill: that holder stopped believing anything at its death.
          holds.set(key, {
            client: id,
            name: m.name,
            token: m.token,
            start: m.at,
            end: killedAt.get(id),
          });
        } else if (m.type === "release" || m.type === "lost") {
          const h = holds.get(key);
          if (h && h.end === undefined) h.end = m.at;
          if (m.type === "lost") report.leasesLost++;
        } else if (m.type === "write") {
          writes.push({ name: m.name, token: m.token, at: m.at, accepted: m.accepted! });
        } else if (m.type === "error") {
          errors[m.kind!] = (errors[m.kind!] ?? 0) + 1;
        }
      },
    );
    clients.set(id, child);
  };
  const kill = (id: string) => {
    const child = clients.get(id)!;
    const at = Date.now();
    killedAt.set(id, at);
    child.kill("SIGKILL");
    clients.delete(id);
    report.clientKills++;
    // A killed holder stops believing anything at its death.
    for (const h of holds.values()) if (h.client === id && h.end === undefined) h.end = at;
  };

  for (let i = 0; i < o.clients; i++) spawnClient();
  const until = Date.now() + o.seconds * 1000;
  let nextServerKill = Date.now() + 3_000;
  let lastRestart = 0;
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100 + random() * 400));
    if (random() < 0.5) {
      kill(pick([...clients.keys()]));
      spawnClient();
    }
    if (o.serverKills && Date.now() > nextServerKill) {
      server!.kill("SIGKILL");
      await new Promise((r) => server!.once("exit", r));
      await new Promise((r) => setTimeout(r, 100 + random() * 400));
      await startServer();
      lastRestart = Date.now();
      report.serverRestarts++;
      nextServerKill = Date.now() + 2_000 + random() * 3_000;
    }
    log(
      `grants ${report.grants}, client kills ${report.clientKills}, server restarts ${report.serverRestarts}`,
    );
  }

  // Stop: every client finishes its current step and exits; then nothing may be left waiting.
  await Promise.all(
    [...clients.values()].map(
      (c) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => c.kill("SIGKILL"), 15_000);
          c.once("exit", () => {
            clearTimeout(timer);
            resolve();
          });
          c.send("stop");
        }),
    ),
  );
  const endOfRun = Date.now();
  // Every request of a dead client must be dropped: within the grace, or — for requests a
  // restart restored — within the recovery window (poll window + repoll grace, 14 s) of it.
  const settleBy = Math.max(endOfRun + 1_000, lastRestart + (o.recoveryWindow ?? 14_000) + 2_000);
  const leftOver = async () => {
    let left = 0;
    for (const name of Object.keys(CAPACITIES)) {
      const res = await fetch(`${url}/v1/resources/${name}`, {
        headers: { authorization: "Bearer chaos" },
      });
      const state = (await res.json()) as { queued: number; active: number };
      left += state.queued + state.active;
    }
    return left;
  };
  while (Date.now() < settleBy && (await leftOver()) > 0)
    await new Promise((r) => setTimeout(r, 200));
  report.waitersStuck = await leftOver();
  server!.kill("SIGTERM");
  register.close();

  const verdict = check([...holds.values()], writes, CAPACITIES, endOfRun);
  report.overlaps = verdict.overlaps.length;
  report.staleWritesAccepted = verdict.staleWritesAccepted.length;
  report.staleWritesRejected = writes.filter((w) => !w.accepted).length;
  for (const v of verdict.overlaps.slice(0, 5))
    log(`overlap on ${v.name} at ${v.at}: ${v.holders.join(", ")}`);
  return report;

  function pick<T>(xs: T[]): T {
    return xs[Math.floor(random() * xs.length)]!;
  }
}

// As a command: pnpm test:chaos
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const options: ChaosOptions = {
    seconds: Number(env.CHAOS_SECONDS ?? 60),
    clients: Number(env.CHAOS_CLIENTS ?? 6),
    serverKills: env.CHAOS_SERVER_KILLS === "1",
    seed: Number(env.CHAOS_SEED ?? Date.now() % 2 ** 31),
    recoveryWindow:
      env.CHAOS_RECOVERY_WINDOW === undefined ? undefined : Number(env.CHAOS_RECOVERY_WINDOW),
  };
  console.log(`chaos: ${JSON.stringify(options)}`);
  let last = 0;
  const r = await runChaos({
    ...options,
    log: (line) => {
      if (Date.now() - last > 5_000 || line.startsWith("overlap")) {
        last = Date.now();
        console.log(line);
      }
    },
  });
  console.log(`
grants:                                   ${r.grants}
client kills:                             ${r.clientKills}
server restarts:                          ${r.serverRestarts}
leases lost (told):                       ${r.leasesLost}
stale writes rejected by the register:    ${r.staleWritesRejected}
overlaps among holders not told they lost: ${r.overlaps}   (must be 0)
stale writes accepted:                    ${r.staleWritesAccepted}   (must be 0)
waiters stuck at the end:                 ${r.waitersStuck}   (must be 0)
client-side outcomes:                     ${JSON.stringify(r.errors)}`);
  process.exit(r.overlaps === 0 && r.staleWritesAccepted === 0 && r.waitersStuck === 0 ? 0 : 1);
}

import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { client, startTestServer } from "./helpers.js";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

describe("server lifecycle", () => {
  it("answers open polls when it closes, then refuses connections", async () => {
    const server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    const holding = api.poll("a", "active", 10_000);
    const waiting = api.acquire("b", { resource: "r" }, 10_000);
    await new Promise((r) => setTimeout(r, 50));
    await server.close();
    expect((await holding).body.state).toBe("active");
    expect((await waiting).body.state).toBe("queued");
    await expect(fetch(`${server.url}/v1/health`)).rejects.toThrow();
    await server.close(); // idempotent
  });

  it("runs as a command: prints its URL, serves, and exits 0 on SIGTERM", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", CLI, "--port", "0", "--api-key", "cli-key", "--memory"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.setEncoding("utf8");
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (chunk: string) => {
        out += chunk;
        const m = /http:\/\/127\.0\.0\.1:\d+/.exec(out);
        if (m) resolve(m[0]);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code} before printing its URL`)));
    });
    const res = await client({ url }, "cli-key").acquire("a", { resource: "r" });
    expect(res.body.state).toBe("active");
    child.kill("SIGTERM");
    const [code] = await once(child, "exit");
    expect(code).toBe(0);
    // Its URL once, in the ready line, though its logs (info by default) go to stdout too:
    // scripts grep the URL from it (.ci/install-tarballs.sh took two once, one from Fastify).
    expect(out.match(/http:\/\/127\.0\.0\.1:\d+/g)).toEqual([url]);
    expect(out).toContain(`RateQueue server ready at ${url}`);
  });

  it("rejects an unknown flag with a usage message and exit code 2", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, "--prot", "1"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      err += c;
    });
    const [code] = await once(child, "exit");
    expect(code).toBe(2);
    expect(err).toMatch(/Unknown option '--prot'/);
    expect(err).toMatch(/Usage: ratequeue-server/);
  });
});

/** Runs the command with `args` until it exits; its exit code, stdout and stderr. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    out += c;
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    err += c;
  });
  const [code] = await once(child, "exit");
  return { code, out, err };
}

describe("the command line", () => {
  it("takes a leading `--`, as `pnpm start -- --help` passes it", async () => {
    const { code, out } = await run(["--", "--help"]);
    expect(code).toBe(0);
    expect(out).toMatch(/Usage: ratequeue-server/);
  });

  it("names the flag, not the option, when a value is out of range", async () => {
    const { code, err } = await run(["--memory", "--poll-window", "99999999"]);
    expect(code).toBe(2);
    expect(err).toMatch(/--poll-window must be/);
    expect(err).not.toMatch(/pollWindow/);
  });

  it("leaves prose alone when it names flags", async () => {
    const { code, err } = await run(["--memory", "--cors-origin", "https://x.example/path"]);
    expect(code).toBe(2);
    expect(err).toMatch(/^ratequeue-server: --cors-origin: .*scheme, host and port only/);
  });

  it("prints a runtime error (a port in use) on its own, exit 1, without the usage", async () => {
    await using server = await startTestServer();
    const { code, err } = await run(["--memory", "--port", new URL(server.url).port]);
    expect(code).toBe(1);
    expect(err).toMatch(/EADDRINUSE/);
    expect(err).not.toMatch(/Usage:/);
  });
});

describe("fencing across restarts", () => {
  it("grants a larger token after the server restarts with its state forgotten", async () => {
    const first = await startTestServer();
    const before = await client(first).acquire("a", { resource: "r" });
    await first.close();
    await using second = await startTestServer();
    const after = await client(second).acquire("a", { resource: "r" });
    expect(after.body.state).toBe("active");
    expect(after.body.fencingToken).toBeGreaterThan(before.body.fencingToken!);
  });
});

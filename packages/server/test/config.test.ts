import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { client, startTestServer } from "./helpers.js";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

function file(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), "rq-config-")), "ratequeue.json");
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

describe("--config: limits set at start", () => {
  it("sets each entry's capacity, concurrency and rates in its API key's namespace, and only there", async () => {
    const config = file({
      limits: [
        { apiKey: "team-a", resource: "openai", capacity: 10, concurrency: 2 },
        {
          apiKey: "team-a",
          resource: "stripe",
          rates: [{ limit: 1, window: 60_000, kind: "fixed", counts: "requests" }],
        },
        {
          apiKey: "team-a",
          resource: "gpu",
          capacity: 2,
          lanes: { strategy: "fair", weights: { interactive: 3 }, reserved: { interactive: 1 } },
        },
      ],
    });
    await using server = await startTestServer({ apiKeys: ["team-a", "team-b"], config });
    const a = client(server, "team-a");
    expect((await a.acquire("o1", { resource: "openai" })).body.state).toBe("active");
    expect((await a.acquire("o2", { resource: "openai" })).body.state).toBe("active");
    // Two hold at once (concurrency), though the capacity of 10 has room.
    expect((await a.acquire("o3", { resource: "openai" }, 0)).body.state).toBe("queued");
    expect((await a.acquire("s1", { resource: "stripe" })).body.state).toBe("active");
    expect((await a.release("s1")).status).toBe(200);
    // One a minute: a release gives nothing back.
    expect((await a.acquire("s2", { resource: "stripe" }, 0)).body.state).toBe("queued");

    // Lanes from the file: interactive keeps its reserved unit from a burst in batch.
    for (const id of ["x1", "x2", "x3"]) await a.acquire(id, { resource: "gpu", lane: "batch" }, 0);
    expect((await a.resource("gpu")).body).toMatchObject({
      used: 1,
      lanes: { batch: { active: 1, queued: 2 } },
    });
    expect((await a.acquire("i1", { resource: "gpu", lane: "interactive" })).body.state).toBe(
      "active",
    );

    // Another namespace's resource of the same name has no limits.
    const b = client(server, "team-b");
    for (const id of ["b1", "b2", "b3"])
      expect((await b.acquire(id, { resource: "openai", capacity: 5 })).body.state).toBe("active");
  });

  it("refuses a file with a mistake before starting, naming the place and what to write", async () => {
    const refused = async (content: unknown, message: RegExp, apiKeys = ["k"]) =>
      expect(startTestServer({ apiKeys, config: file(content) })).rejects.toThrow(message);
    await refused("{ nope", /is not JSON/);
    await refused({ limit: [] }, /"limit" is not a config field/);
    await refused({ limits: {} }, /limits must be an array/);
    await refused(
      { limits: [{ resource: "r", capacity: 1 }] },
      /limits\[0\] must name its namespace/,
    );
    await refused(
      { limits: [{ apiKey: "k", namespace: "n", resource: "r", capacity: 1 }] },
      /by "apiKey" or by "namespace"/,
    );
    await refused(
      { limits: [{ apiKey: "k", resource: "r", rates: [{ limit: 5, window: 0 }] }] },
      /limits\[0\]\.rates is wrong: rates\[0\]\.window must be a whole number of ms/,
    );
    await refused(
      { limits: [{ apiKey: "k", resource: "r", capacity: 1, colour: "red" }] },
      /limits\[0\]\.colour is wrong: unknown field "colour"/,
    );
    await refused({ limits: [{ apiKey: "k", resource: "r" }] }, /limits\[0\]\.capacity is wrong/);
    await refused(
      { limits: [{ apiKey: "other", resource: "r", capacity: 1 }] },
      /limits\[0\]\.apiKey is not one of the server's API keys/,
    );
    await refused(
      {
        limits: [
          { apiKey: "k", resource: "r", capacity: 1 },
          { apiKey: "k", resource: "r", capacity: 2 },
        ],
      },
      /limits\[1\] sets "r" a second time/,
    );
    await refused(
      {
        limits: [
          { apiKey: "k", resource: "r", lanes: { strategy: "strict", shares: { "a/b": 1 } } },
        ],
      },
      /limits\[0\]\.lanes\.shares\.a\/b is wrong: .*is not a lane name/,
    );
    await refused(
      { limits: [{ apiKey: "k", resource: "r", lanes: { weights: { a: 1.5 } } }] },
      /limits\[0\]\.lanes\.weights\.a is wrong: .*whole number from 1 to 1000/,
    );
    await refused(
      {
        limits: [
          {
            apiKey: "k",
            resource: "r",
            capacity: 2,
            lanes: { strategy: "strict", shares: { a: 3 } },
          },
        ],
      },
      /limits\[0\] \("r"\) cannot be set now: .*shares add up to 3, more than the capacity \(2\)/,
    );
    await expect(startTestServer({ config: "/nonexistent/ratequeue.json" })).rejects.toThrow(
      /cannot read the config file \/nonexistent\/ratequeue\.json/,
    );
  });

  it("the command takes --config, and exits 2 saying what is wrong with a bad file", async () => {
    const bad = file({ limits: [{ apiKey: "k", resource: "r", capacity: -1 }] });
    const child = spawn(
      process.execPath,
      ["--import", "tsx", CLI, "--memory", "--port", "0", "--api-key", "k", "--config", bad],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      err += c;
    });
    const [code] = await once(child, "exit");
    expect(code).toBe(2);
    expect(err).toMatch(/limits\[0\]\.capacity is wrong: capacity must be a whole number/);
  });
});

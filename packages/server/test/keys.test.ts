import { describe, expect, it } from "vitest";
import { startServer } from "../src/index.js";
import { client, startTestServer } from "./helpers.js";

describe("HTTP: API keys are namespaces", () => {
  it("keeps the same resource name under two keys as two resources", async () => {
    await using server = await startTestServer({ apiKeys: ["key-one", "key-two"] });
    const one = client(server, "key-one");
    const two = client(server, "key-two");
    expect((await one.acquire("a", { resource: "shared-name" })).body.state).toBe("active");
    expect((await two.acquire("a", { resource: "shared-name" })).body.state).toBe("active");
  });

  it("lets no key see or release another key's requests", async () => {
    await using server = await startTestServer({ apiKeys: ["key-one", "key-two"] });
    const one = client(server, "key-one");
    const two = client(server, "key-two");
    await one.acquire("a", { resource: "r" });
    expect((await two.poll("a")).status).toBe(404);
    expect((await two.release("a")).status).toBe(404);
    expect((await two.resource("r")).body).toMatchObject({ used: 0 });
    expect((await one.poll("a")).body.state).toBe("active");
  });

  it("counts fencing tokens per key: one key learns nothing of another's grants from its own", async () => {
    // repro 16: with one counter for all keys, B's tokens before and after told it how many
    // grants A had made in between.
    await using server = await startTestServer({ apiKeys: ["key-a", "key-b"] });
    const a = client(server, "key-a");
    const b = client(server, "key-b");
    const token = async (api: typeof a, id: string) => {
      const snap = (await api.acquire(id, { resource: "r" }, 0)).body;
      await api.release(id);
      return snap.fencingToken!;
    };
    const before = await token(b, "b1");
    const aTokens: number[] = [];
    for (let i = 0; i < 25; i++) aTokens.push(await token(a, `a${i}`));
    const after = await token(b, "b2");
    expect(after - before).toBe(1); // B's next token, whatever A did
    expect(aTokens.every((t, i) => i === 0 || t > aTokens[i - 1]!)).toBe(true);
  });

  it("refuses an unknown key with 401 and a WWW-Authenticate challenge", async () => {
    await using server = await startTestServer({ apiKeys: ["key-one"] });
    const res = await fetch(`${server.url}/v1/requests/a`, {
      headers: { authorization: "Bearer guess" },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const body = await res.json();
    expect(body.code).toBe("unauthorized");
    expect(body.detail).not.toContain("guess"); // never echo keys
  });

  it("in open development mode makes each token its own namespace", async () => {
    await using server = await startTestServer();
    await client(server, "alice").acquire("a", { resource: "r" });
    expect((await client(server, "bob").acquire("a", { resource: "r" })).body.state).toBe("active");
  });

  it("refuses to start in open mode on a non-loopback interface", async () => {
    await expect(startServer({ host: "0.0.0.0", port: 0 })).rejects.toThrow(/loopback/);
  });

  it("warns loudly when it starts in open development mode", async () => {
    const lines: string[] = [];
    await using _server = await startTestServer({ log: (l) => lines.push(l) });
    expect(lines.join("\n")).toMatch(/WARNING: open development mode/);
  });

  it("serves health without a key", async () => {
    await using server = await startTestServer({ apiKeys: ["key-one"] });
    const res = await fetch(`${server.url}/v1/health`);
    expect(await res.json()).toEqual({ status: "ok", mode: "keys" });
  });
});

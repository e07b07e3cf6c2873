import http from "node:http";
import { describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { startTestServer } from "./helpers.js";

const preflight = (url: string, origin: string) =>
  fetch(`${url}/v1/requests/a`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "PUT",
      "access-control-request-headers": "authorization, content-type",
    },
  });

/** Opens a WebSocket session as a page of `origin` would; resolves "open" or the refusal's status. */
function openSession(url: string, origin: string): Promise<"open" | number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/session`, { origin });
    ws.once("open", () => {
      ws.close();
      resolve("open");
    });
    ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    ws.once("error", () => {});
  });
}

describe("browsers (CORS)", () => {
  it("answers preflights and requests of an allowed origin, and of no other", async () => {
    await using server = await startTestServer({ corsOrigins: ["https://app.example.com"] });
    const ok = await preflight(server.url, "https://app.example.com");
    expect(ok.status).toBeLessThan(300);
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(ok.headers.get("access-control-allow-headers")).toMatch(/authorization/i);
    expect(ok.headers.get("access-control-allow-methods")).toMatch(/PUT/);

    const put = await fetch(`${server.url}/v1/requests/a?wait=0`, {
      method: "PUT",
      headers: {
        origin: "https://app.example.com",
        authorization: "Bearer page",
        "content-type": "application/json",
      },
      body: JSON.stringify({ resource: "r" }),
    });
    expect(put.status).toBe(200);
    expect(put.headers.get("access-control-allow-origin")).toBe("https://app.example.com");

    const other = await preflight(server.url, "https://evil.example");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("accepts WebSocket sessions from allowed origins only", async () => {
    await using server = await startTestServer({ corsOrigins: ["https://app.example.com"] });
    expect(await openSession(server.url, "https://app.example.com")).toBe("open");
    expect(await openSession(server.url, "https://evil.example")).toBe(403);
  });

  it("without --cors-origin, gives browsers of other origins nothing", async () => {
    await using server = await startTestServer();
    const res = await preflight(server.url, "https://app.example.com");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect(await openSession(server.url, "https://app.example.com")).toBe(403);
  });

  it("refuses an origin that is not one, naming the flag", async () => {
    await expect(startTestServer({ corsOrigins: ["app.example.com/path"] })).rejects.toThrow(
      /corsOrigins: "app.example.com\/path" is not an origin/,
    );
  });

  it("without --cors-origin, an OPTIONS request is not spared authentication", async () => {
    await using server = await startTestServer({ apiKeys: ["k"] });
    const res = await fetch(`${server.url}/v1/anything`, { method: "OPTIONS" });
    expect(res.status).toBe(401);
  });
});

describe("open development mode and DNS rebinding", () => {
  it("answers only requests addressed to a loopback name", async () => {
    await using server = await startTestServer();
    const { port } = new URL(server.url);
    const status = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.get(
          {
            host: "127.0.0.1",
            port,
            path: "/v1/resources/r",
            headers: { host, authorization: "Bearer dev" },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on("error", reject);
      });
    expect(await status(`127.0.0.1:${port}`)).toBe(200);
    expect(await status(`localhost:${port}`)).toBe(200);
    expect(await status(`evil.example:${port}`)).toBe(403);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/session`, {
      headers: { host: `evil.example:${port}` },
    });
    ws.once("error", () => {});
    const refused = await new Promise((resolve) =>
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode)),
    );
    expect(refused).toBe(403);
  });
});

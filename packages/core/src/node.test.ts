import { MockAgent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { undiciTransport } from "./node.js";

describe("undiciTransport", () => {
  const agent = new MockAgent();
  agent.disableNetConnect();
  afterEach(() => agent.assertNoPendingInterceptors());

  it.each([
    [
      "a plain URL, as the client builds them",
      "http://127.0.0.1:7420/v1/sessions/s?after=0&wait=0",
      "/v1/sessions/s?after=0&wait=0",
    ],
    [
      "a base path with a space",
      "http://127.0.0.1:7420/rate queue/v1/health",
      "/rate%20queue/v1/health",
    ],
    ["a base path with dot segments", "http://127.0.0.1:7420/a/../v1/health", "/v1/health"],
    ["an IPv6 host", "http://[::1]:7420/v1/health", "/v1/health"],
  ])("sends %s to the right origin and path", async (_what, url, path) => {
    const origin = url.startsWith("http://[") ? "http://[::1]:7420" : "http://127.0.0.1:7420";
    agent.get(origin).intercept({ path, method: "GET" }).reply(200, "ok");
    const transport = undiciTransport({ dispatcher: agent });
    const res = await transport({
      method: "GET",
      url,
      headers: {},
      signal: new AbortController().signal,
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
  });
});

import { Pool } from "undici";
import { WebSocket } from "ws";
import { createRateQueue } from "../packages/sdk/src/node.js";

/**
 * Raw clients of the two session transports — the protocol by hand, nothing else — to measure
 * what the SDK adds on top of the same transport (issue 8: ≤ 15 %).
 */

/** Latencies (ms) of `n` acquire+release cycles over one raw WebSocket session. */
export async function rawWebSocketCycles(url: string, n: number): Promise<number[]> {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/session`, {
    perMessageDeflate: false,
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  let waiter: ((message: { state?: string }) => void) | undefined;
  ws.on("message", (data) => {
    const parsed = JSON.parse(String(data));
    for (const m of Array.isArray(parsed) ? parsed : [parsed]) waiter?.(m);
  });
  const ask = (message: object, expect: string) =>
    new Promise<void>((resolve, reject) => {
      waiter = (m) => {
        if (m.state === expect) resolve();
        else reject(new Error(`expected ${expect}, got ${JSON.stringify(m)}`));
      };
      ws.send(JSON.stringify(message));
    });
  const session = crypto.randomUUID();
  await new Promise<void>((resolve) => {
    waiter = () => resolve();
    ws.send(JSON.stringify({ t: "hello", key: "bench", session }));
  });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = crypto.randomUUID();
    const t = performance.now();
    await ask({ t: "acquire", id, resource: "raw-uncontended" }, "active");
    await ask({ t: "release", id }, "released");
    out.push(performance.now() - t);
  }
  ws.close();
  return out;
}

/** Latencies (ms) of `n` acquire+release cycles over a raw HTTP session (one POST each way). */
export async function rawHttpSessionCycles(url: string, n: number): Promise<number[]> {
  const pool = new Pool(url, { connections: 4 });
  const session = crypto.randomUUID();
  const post = async (messages: object[], expect: string) => {
    const res = await pool.request({
      method: "POST",
      path: `/v1/sessions/${session}?wait=0`,
      headers: { authorization: "Bearer bench", "content-type": "application/json" },
      body: JSON.stringify(messages),
    });
    const body = (await res.body.json()) as { messages: Array<{ state?: string }> };
    if (body.messages[0]?.state !== expect)
      throw new Error(`expected ${expect}, got ${JSON.stringify(body)}`);
  };
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = crypto.randomUUID();
    const t = performance.now();
    await post([{ t: "acquire", id, resource: "raw-uncontended" }], "active");
    await post([{ t: "release", id }], "released");
    out.push(performance.now() - t);
  }
  await pool.close();
  return out;
}

/** Latencies (ms) of `n` sequential uncontended `acquire(name, {}, fn)` cycles through the SDK. */
export async function sdkSessionCycles(
  url: string,
  n: number,
  session: "websocket" | "http",
): Promise<number[]> {
  const rq = createRateQueue({ apiKey: "bench", baseUrl: url, session });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await rq.acquire("sdk-uncontended", {}, () => {});
    out.push(performance.now() - t);
  }
  return out;
}

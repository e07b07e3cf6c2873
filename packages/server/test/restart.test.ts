import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { startServer } from "../src/index.js";
import { client, eventually, pastTakeover, startTestServer, stateDir } from "./helpers.js";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const tempDir = () => mkdtempSync(join(tmpdir(), "ratequeue-test-"));

/** `ratequeue-server` in its own process, so that it can be killed with SIGKILL. */
async function spawnServer(args: string[]): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      const m = /http:\/\/127\.0\.0\.1:\d+/.exec(d);
      if (m) resolve(m[0]);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { url, child };
}

async function killHard(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

describe("a server with a data directory", () => {
  it("keeps held leases, queued requests and their order across a restart", async () => {
    const dataDir = stateDir();
    const first = await startTestServer({ dataDir });
    const api = client(first);
    const holder = (await api.acquire("holder", { resource: "r", capacity: 1 })).body;
    await api.acquire("w1", { resource: "r" }, 0);
    await api.acquire("w2", { resource: "r", priority: 20 }, 0);
    await api.acquire("w3", { resource: "r" }, 0);
    await first.close();

    await using second = await startTestServer({ dataDir });
    await pastTakeover();
    const again = client(second);
    const resumed = await again.poll("holder", "queued", 0);
    expect(resumed.body).toMatchObject({ state: "active", fencingToken: holder.fencingToken });
    expect((await again.resource("r")).body).toMatchObject({ capacity: 1, active: 1, queued: 3 });
    const order: string[] = [];
    let current = "holder";
    for (let i = 0; i < 3; i++) {
      await again.release(current);
      for (const id of ["w1", "w2", "w3"]) {
        if (!order.includes(id) && (await again.poll(id)).body.state === "active") current = id;
      }
      order.push(current);
    }
    expect(order).toEqual(["w2", "w1", "w3"]);
  });

  it("grants larger fencing tokens after a restart than before it", async () => {
    const dataDir = stateDir();
    const first = await startTestServer({ dataDir });
    const before = (await client(first).acquire("a", { resource: "r" })).body.fencingToken!;
    await client(first).release("a");
    await first.close();
    await using second = await startTestServer({
      dataDir,
      clock: { now: () => Date.now() - 60_000 },
    });
    // Even with the clock set back a minute, the saved high-water mark wins.
    const after = (await client(second).acquire("b", { resource: "r" })).body.fencingToken!;
    expect(after).toBeGreaterThan(before);
  });

  it("drops a restored holder that does not come back within the recovery window, then serves the next", async () => {
    const dataDir = stateDir();
    const first = await startTestServer({ dataDir });
    await client(first).acquire("gone", { resource: "r" });
    await client(first).acquire("next", { resource: "r" }, 0);
    await first.close();
    // A window well past the 200 ms poll below plus the start (longer on PostgreSQL).
    await using second = await startTestServer({ dataDir, recoveryWindow: 1_000 });
    const api = client(second);
    // "next" comes back and waits; "gone" never does.
    let snap = (await api.poll("next", "queued", 200)).body;
    expect((await api.poll("gone")).body.state).toBe("active");
    while (snap.state === "queued") snap = (await api.poll("next", "queued")).body;
    expect(snap.state).toBe("active");
    expect((await api.poll("gone")).body.state).toBe("dropped");
  });

  // Found by the long chaos run (server kills every 2–5 s, recovery window 14 s): each restart
  // gave the sessions it restored a new window, so the leases of clients that died before the
  // first restart were held for as long as the restarts went on, and nobody else was served.
  it("gives a session that never came back no new recovery window at the next restart", async () => {
    const dataDir = stateDir();
    const first = await startTestServer({ dataDir });
    const taken = await client(first).call<{ messages: Array<{ state: string }> }>(
      "POST",
      "/v1/sessions/dead?wait=0",
      [{ t: "acquire", id: "held", resource: "r" }],
    );
    expect(taken.body.messages[0]?.state).toBe("active");
    await first.close(); // the session's client is gone for good

    const window = 2_000;
    // The window starts while the server starts (no later than it has), and a second of it is
    // left for the next restart: a takeover on PostgreSQL takes longer than opening a directory.
    const firstDeadline = performance.now() + window;
    const second = await startTestServer({ dataDir, recoveryWindow: window });
    await new Promise((resolve) => setTimeout(resolve, firstDeadline - 1_000 - performance.now()));
    await second.close();
    await using third = await startTestServer({ dataDir, recoveryWindow: window });
    const renewedDeadline = performance.now() + window;
    const held = async () => {
      const res = await client(third).resource("r");
      return res.status === 200 && res.body.active === 1;
    };
    expect(await held()).toBe(true); // restored again, within the first restart's window
    await eventually(async () => !(await held()), 5_000);
    const droppedBy = performance.now();
    expect(droppedBy).toBeGreaterThanOrEqual(firstDeadline - 50);
    expect(droppedBy).toBeLessThan(renewedDeadline); // not a new window from this restart

    // A session that does come back gets a window of its own at the next restart.
    const api = client(third);
    await api.call("POST", "/v1/sessions/alive?wait=0", [{ t: "acquire", id: "a", resource: "s" }]);
    await third.close();
    await using fourth = await startTestServer({ dataDir, recoveryWindow: window });
    await client(fourth).call("POST", "/v1/sessions/alive?wait=0", []); // back at once
    // Past the window fourth gave it: had it not counted as back, fifth would drop it at once.
    await new Promise((resolve) => setTimeout(resolve, window + 200));
    await fourth.close();
    await using fifth = await startTestServer({ dataDir, recoveryWindow: 60_000 });
    expect((await client(fifth).resource("s")).body).toMatchObject({ active: 1 });
  });

  // Issue 12: a revoke's holder may not have heard of it when the server stops (its event is
  // sent after the revoke is committed). The restarted server holds the units back for it until
  // it is told — its next poll — or until its session is given up, never less.
  describe("a holder revoked just before a restart", () => {
    async function revokeThenStop(
      dataDir: string,
      held: (api: ReturnType<typeof client>) => Promise<unknown>,
    ) {
      const first = await startTestServer({ dataDir });
      const api = client(first);
      await held(api);
      const admin = (path: string, method = "GET", body?: unknown) =>
        api.call<{ namespaces: Array<{ id: string }>; state: string }>(
          method,
          `/v1/admin${path}`,
          body,
        );
      const [{ id: ns } = { id: "" }] = (await admin("/namespaces")).body.namespaces;
      const revoked = await admin(`/namespaces/${ns}/requests/held/revoke`, "POST", {
        reason: "ops",
      });
      expect(revoked.body).toMatchObject({ state: "revoked", reason: "ops" });
      await first.close(); // within grace of the revoke
    }

    it("keeps its units from the next until its poll hears of the revoke (a request of its own)", async () => {
      const dataDir = stateDir();
      await revokeThenStop(dataDir, (api) => api.acquire("held", { resource: "r" }));
      await using second = await startTestServer({ dataDir, recoveryWindow: 60_000 });
      const api = client(second);
      expect((await api.acquire("next", { resource: "r" }, 0)).body.state).toBe("queued");
      expect((await api.resource("r")).body).toMatchObject({ active: 0, queued: 1 });
      // The holder asks after its lease: revoked, with the reason; the next follows it.
      expect((await api.poll("held", "active", 0)).body).toMatchObject({
        state: "revoked",
        reason: "ops",
      });
      // Well before the recovery window: the holder was told, so grace is enough.
      let snap = (await api.poll("next", "queued", 10_000)).body;
      while (snap.state === "queued") snap = (await api.poll("next", "queued", 10_000)).body;
      expect(snap.state).toBe("active");
    });

    it("keeps its units until its session's recovery window ends, if the session never comes back", async () => {
      const dataDir = stateDir();
      await revokeThenStop(dataDir, (api) =>
        api.call("POST", "/v1/sessions/dead?wait=0", [{ t: "acquire", id: "held", resource: "r" }]),
      );
      const window = 1_000;
      const deadline = performance.now() + window; // the window starts while the server starts
      const second = await startTestServer({ dataDir, recoveryWindow: window });
      const api = client(second);
      expect((await api.acquire("next", { resource: "r" }, 0)).body.state).toBe("queued");
      expect((await api.poll("held")).body).toMatchObject({ state: "revoked", reason: "ops" });
      let snap = (await api.poll("next", "queued", 5_000)).body;
      while (snap.state === "queued") snap = (await api.poll("next", "queued", 5_000)).body;
      expect(snap.state).toBe("active");
      expect(performance.now()).toBeGreaterThanOrEqual(deadline - 50);
      await api.release("next");
      await second.close();
      // Its units went back: the store no longer keeps it.
      await using third = await startTestServer({ dataDir, recoveryWindow: 60_000 });
      await pastTakeover();
      expect((await client(third).acquire("after", { resource: "r" }, 0)).body.state).toBe(
        "active",
      );
    });
  });

  it("refuses a second server on the same data directory", async () => {
    const dataDir = tempDir();
    await using _first = await startTestServer({ dataDir });
    await expect(startServer({ port: 0, dataDir })).rejects.toThrow(/another ratequeue-server/);
  });

  it("restarts on its data directory when the pid left there is alive (as PID 1 in a container)", async () => {
    // repro 06: a restarted container's server has the killed one's pid (1), so a pid file
    // named a live process — itself — and the server refused its own directory.
    const dataDir = tempDir();
    for (const file of ["server.pid", "server.lock"])
      writeFileSync(join(dataDir, file), String(process.pid));
    await using server = await startTestServer({ dataDir });
    expect((await client(server).acquire("a", { resource: "r" }, 0)).body.state).toBe("active");
  });

  it("refuses a directory a server of an earlier version (server.pid, no lock) still uses", async () => {
    const dataDir = tempDir();
    const old = spawn("sleep", ["30"]); // a live process that is neither this one nor its parent
    try {
      writeFileSync(join(dataDir, "server.pid"), String(old.pid));
      await expect(startServer({ port: 0, dataDir })).rejects.toThrow(
        /an earlier version \(pid \d+\) is using it/,
      );
    } finally {
      old.kill("SIGKILL");
      await once(old, "exit");
    }
    // Gone: its pid file is stale, and the directory opens.
    await using server = await startTestServer({ dataDir });
    expect((await client(server).acquire("a", { resource: "r" }, 0)).body.state).toBe("active");
  });

  it("refuses to serve stored requests without the secret their namespaces are hashed with", async () => {
    const dataDir = tempDir();
    const first = await startTestServer({ dataDir });
    await client(first).acquire("a", { resource: "r" }, 0);
    await first.close();
    rmSync(join(dataDir, "secret.key"));
    await expect(startServer({ port: 0, dataDir })).rejects.toThrow(/secret.key is missing/);
  });

  it("lets go of the directory when it fails to open it, so that a retry in the process can", async () => {
    const dataDir = tempDir();
    const first = await startTestServer({ dataDir });
    await first.close();
    writeFileSync(join(dataDir, "journal.log"), `${JSON.stringify(["s", { ns: "k", id: {} }])}\n`);
    await expect(startServer({ port: 0, dataDir })).rejects.toThrow(
      /cannot open the data directory/,
    );
    writeFileSync(join(dataDir, "journal.log"), "");
    await using second = await startTestServer({ dataDir });
    expect((await client(second).acquire("a", { resource: "r" }, 0)).body.state).toBe("active");
  });

  it("is held by a lock the kernel drops when the server is killed", async () => {
    const dataDir = tempDir();
    const first = await spawnServer(["--port", "0", "--data-dir", dataDir]);
    try {
      await expect(startServer({ port: 0, dataDir })).rejects.toThrow(
        /another ratequeue-server \(pid \d+\) is using it/,
      );
    } finally {
      await killHard(first.child);
    }
    await using second = await startTestServer({ dataDir });
    expect((await client(second).acquire("a", { resource: "r" }, 0)).body.state).toBe("active");
  });

  it("stores namespaces as keyed hashes, never the API keys themselves", async () => {
    const dataDir = tempDir();
    const key = "sk_live_the-key-itself";
    const first = await startTestServer({ dataDir, apiKeys: [key] });
    await client(first, key).acquire("a", { resource: "r" }, 0);
    await first.close();
    for (const file of readdirSync(dataDir)) {
      if (file === "secret.key") continue;
      expect(readFileSync(join(dataDir, file)).includes(key), file).toBe(false);
    }
    // ...and the same key finds its lease again after the restart.
    await using second = await startTestServer({ dataDir, apiKeys: [key] });
    expect((await client(second, key).poll("a")).body.state).toBe("active");
  });

  it("survives kill -9: the holder keeps its lease, the waiter its place", async () => {
    const dataDir = tempDir();
    const first = await spawnServer(["--port", "0", "--data-dir", dataDir]);
    const port = new URL(first.url).port;
    const api = client(first);
    const holder = (await api.acquire("holder", { resource: "r" })).body;
    await api.acquire("waiter", { resource: "r" }, 0);
    await killHard(first.child);

    const second = await spawnServer(["--port", port, "--data-dir", dataDir]);
    try {
      const again = client(second);
      expect((await again.poll("holder", "queued", 0)).body).toMatchObject({
        state: "active",
        fencingToken: holder.fencingToken,
      });
      expect((await again.poll("waiter", "queued", 0)).body.state).toBe("queued");
      await again.release("holder");
      await eventually(async () => (await again.poll("waiter")).body.state === "active");
      expect((await again.poll("waiter")).body.fencingToken).toBeGreaterThan(holder.fencingToken!);
    } finally {
      await killHard(second.child);
    }
  });
});

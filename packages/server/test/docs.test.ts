import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { startTestServer } from "./helpers.js";

const run = promisify(execFile);
const PROTOCOL = fileURLToPath(new URL("../../../docs/protocol.md", import.meta.url));

/** The shell script of docs/protocol.md's "Holding a lock with curl", as printed there. */
function holdScript(): string {
  const doc = readFileSync(PROTOCOL, "utf8");
  const section = doc.slice(doc.indexOf("### Holding a lock with curl"));
  const script = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (script === undefined) throw new Error("no sh block under 'Holding a lock with curl'");
  const file = join(mkdtempSync(join(tmpdir(), "ratequeue-doc-")), "hold.sh");
  writeFileSync(file, script, { mode: 0o755 });
  return file;
}

describe("docs/protocol.md", () => {
  it("holds a lock with curl as its worked session shows, across a poll window, and queues a second copy", async () => {
    await using server = await startTestServer({ pollWindow: 1_000 });
    const hold = holdScript();
    const env = { ...process.env, RATEQUEUE_URL: server.url, RATEQUEUE_API_KEY: "doc" };
    // A holds for 2.5 poll windows; B starts while A holds, and must run after A ends.
    const work = (who: string, ms: number) =>
      `echo ${who} start $(date +%s%N); sleep ${ms / 1000}; echo ${who} end $(date +%s%N)`;
    const a = run("sh", [hold, "sh", "-c", work("A", 2_500)], { env });
    await new Promise((r) => setTimeout(r, 300));
    const b = run("sh", [hold, "sh", "-c", work("B", 0)], { env });
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.stderr + rb.stderr).not.toMatch(/lease lost|not granted/);
    const at = (out: string, what: string) => Number(new RegExp(`${what} (\\d+)`).exec(out)?.[1]);
    expect(at(rb.stdout, "B start")).toBeGreaterThan(at(ra.stdout, "A end"));
    expect(ra.stdout).toMatch(/"state":"released"/);
  });
});

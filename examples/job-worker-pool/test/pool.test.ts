import { createRateQueue } from "@ratequeue/sdk";
import { describe, expect, it } from "vitest";
import { ConcurrencyTracker } from "../../shared/concurrency.js";
import { isIdle, random, startTestServer } from "../../shared/testing.js";
import { applyPayment, type InvoiceTask, Ledger, runPool } from "../pool.js";

const API_KEY = "pool-example";
const INVOICES = 30;

/** `count` tasks over INVOICES invoices (so ~count/INVOICES tasks per invoice id), shuffled. */
function makeTasks(count: number, seed: number): InvoiceTask[] {
  const rand = random(seed);
  const tasks = Array.from({ length: count }, (_, i) => ({
    id: `task-${i}`,
    invoiceId: i % INVOICES,
    amount: 1 + Math.floor(rand() * 9),
  }));
  for (let i = tasks.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [tasks[i], tasks[j]] = [tasks[j]!, tasks[i]!];
  }
  return tasks;
}

async function setup() {
  const server = await startTestServer();
  return {
    server,
    rq: createRateQueue({ apiKey: API_KEY, baseUrl: server.url }),
    ledger: new Ledger(),
    tracker: new ConcurrencyTracker(),
    runs: new Map<string, number>(),
    [Symbol.asyncDispose]: () => server.close(),
  };
}

describe("job-worker-pool", () => {
  it("runs every task exactly once, and never two tasks of one invoice at a time", async () => {
    await using t = await setup();
    const tasks = makeTasks(300, 20261129);
    const report = await runPool(tasks, {
      rq: t.rq,
      concurrency: 16,
      handle: async (task, lease) => {
        t.tracker.enter(String(task.invoiceId));
        t.runs.set(task.id, (t.runs.get(task.id) ?? 0) + 1);
        try {
          await applyPayment(t.ledger, task, lease);
        } finally {
          t.tracker.leave(String(task.invoiceId));
        }
      },
    });

    expect(report.failed).toEqual([]);
    expect(report.done).toHaveLength(tasks.length);
    // Exactly once: every task ran, none twice.
    expect([...t.runs.values()].every((n) => n === 1)).toBe(true);
    expect(t.runs.size).toBe(tasks.length);
    // Never overlapping per invoice, and so nothing lost: each invoice has all its payments.
    expect(t.tracker.maxPerKey).toBe(1);
    for (let invoiceId = 0; invoiceId < INVOICES; invoiceId++) {
      const mine = tasks.filter((task) => task.invoiceId === invoiceId);
      const invoice = t.ledger.get(invoiceId)!;
      expect(invoice.paid).toBe(mine.reduce((sum, task) => sum + task.amount, 0));
      expect([...invoice.tasks].sort()).toEqual(mine.map((task) => task.id).sort());
    }
    // The pool did run tasks of different invoices side by side.
    expect(t.tracker.maxOverall).toBeGreaterThan(1);
    for (let invoiceId = 0; invoiceId < INVOICES; invoiceId++) {
      expect(await isIdle(t.server, `invoice-process-${invoiceId}`, API_KEY)).toBe(true);
    }
  }, 10_000);

  it("reports a task that throws once, releases its invoice, and runs the invoice's other tasks", async () => {
    await using t = await setup();
    const tasks = makeTasks(60, 7);
    const bad = tasks.find((task) => task.invoiceId === 3)!;
    bad.amount = -5;
    const report = await runPool(tasks, {
      rq: t.rq,
      concurrency: 8,
      handle: async (task, lease) => {
        t.runs.set(task.id, (t.runs.get(task.id) ?? 0) + 1);
        await applyPayment(t.ledger, task, lease);
      },
    });

    expect(report.failed.map((f) => f.task.id)).toEqual([bad.id]);
    expect(String(report.failed[0]!.error)).toContain("negative amount");
    expect(report.done).toHaveLength(tasks.length - 1);
    expect(t.runs.size).toBe(tasks.length);
    expect([...t.runs.values()].every((n) => n === 1)).toBe(true); // not retried
    const others = tasks.filter((task) => task.invoiceId === 3 && task !== bad);
    expect(t.ledger.get(3)!.tasks.sort()).toEqual(others.map((task) => task.id).sort());
    expect(await isIdle(t.server, "invoice-process-3", API_KEY)).toBe(true);
  }, 10_000);
});

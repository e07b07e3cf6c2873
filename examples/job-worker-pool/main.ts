/**
 * `pnpm -C examples job-worker-pool`: 400 payment tasks over 40 invoices (about 10 per invoice,
 * shuffled) processed by 16 workers in this process, one task per invoice at a time.
 */
import { exampleServer } from "../shared/server.js";
import { applyPayment, type InvoiceTask, Ledger, runPool } from "./pool.js";

const rqServer = await exampleServer();
const tasks: InvoiceTask[] = Array.from({ length: 400 }, (_, i) => ({
  id: `task-${i}`,
  invoiceId: i % 40,
  amount: 1 + (i % 7),
}));
tasks.sort(() => Math.random() - 0.5);

const ledger = new Ledger();
const started = Date.now();
const report = await runPool(tasks, {
  concurrency: 16,
  handle: (task, lease) => applyPayment(ledger, task, lease),
});
console.log(
  `${report.done.length} tasks done, ${report.failed.length} failed, in ${Date.now() - started} ms`,
);
for (const invoiceId of [0, 1, 2]) {
  const expected = tasks.filter((t) => t.invoiceId === invoiceId).reduce((s, t) => s + t.amount, 0);
  const invoice = ledger.get(invoiceId)!;
  console.log(
    `  invoice ${invoiceId}: paid ${invoice.paid} (expected ${expected}) by ${invoice.tasks.length} tasks`,
  );
}
await rqServer.close();

/**
 * A worker pool in one process: `concurrency` workers take tasks from one list, and each task
 * runs while holding the lock `invoice-process-${invoiceId}`. Tasks of one invoice never
 * overlap — here, in other processes, or on other machines using the same RateQueue server —
 * and tasks of different invoices run side by side. A worker whose invoice is busy waits in
 * that invoice's line (served in arrival order) instead of polling.
 */
import { type Lease, type RateQueue, ratequeue } from "@ratequeue/sdk";

export interface InvoiceTask {
  /** Unique per task: a retried delivery of the same message would carry the same id. */
  id: string;
  invoiceId: number;
  amount: number;
}

export interface PoolOptions<T extends InvoiceTask> {
  /** The RateQueue client. Default: `ratequeue`, configured from RATEQUEUE_URL / RATEQUEUE_API_KEY. */
  rq?: RateQueue;
  /** Workers running at once (default 16). */
  concurrency?: number;
  /** Processes one task, holding its invoice's lease. */
  handle: (task: T, lease: Lease) => Promise<void>;
}

export interface PoolReport<T> {
  done: T[];
  failed: { task: T; error: unknown }[];
}

/** Runs every task once; a task that throws is reported in `failed` and not retried. */
export async function runPool<T extends InvoiceTask>(
  tasks: readonly T[],
  { rq = ratequeue, concurrency = 16, handle }: PoolOptions<T>,
): Promise<PoolReport<T>> {
  const report: PoolReport<T> = { done: [], failed: [] };
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const task = tasks[next++]!;
      try {
        // The callback form releases the lease when `handle` returns or throws.
        await rq.acquire(`invoice-process-${task.invoiceId}`, {}, (lease) => handle(task, lease));
        report.done.push(task);
      } catch (error) {
        report.failed.push({ task, error });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
  return report;
}

/** An invoice's state, updated by read-modify-write: a lost update would show in `paid`. */
export interface Invoice {
  paid: number;
  tasks: string[];
  lastToken: number;
}

/**
 * A ledger with the latency of a database: reads and writes yield, so two tasks of one invoice
 * that overlapped would both read the same `paid` and one payment would be lost. Writes are
 * fenced by the lease's token.
 */
export class Ledger {
  readonly #invoices = new Map<number, Invoice>();
  async read(invoiceId: number): Promise<Invoice> {
    await new Promise((r) => setTimeout(r, 1));
    const invoice = this.#invoices.get(invoiceId);
    return invoice
      ? { ...invoice, tasks: [...invoice.tasks] }
      : { paid: 0, tasks: [], lastToken: 0 };
  }
  async write(invoiceId: number, invoice: Invoice, fencingToken: number): Promise<void> {
    await new Promise((r) => setTimeout(r, 1));
    const current = this.#invoices.get(invoiceId);
    if (current && fencingToken <= current.lastToken) {
      throw new Error(`invoice ${invoiceId}: stale write (token ${fencingToken})`);
    }
    this.#invoices.set(invoiceId, { ...invoice, lastToken: fencingToken });
  }
  get(invoiceId: number): Invoice | undefined {
    return this.#invoices.get(invoiceId);
  }
}

/** The task's work: record the payment on its invoice. Refuses a negative amount. */
export async function applyPayment(ledger: Ledger, task: InvoiceTask, lease: Lease) {
  const invoice = await ledger.read(task.invoiceId);
  if (task.amount < 0) throw new Error(`task ${task.id}: negative amount ${task.amount}`);
  invoice.paid += task.amount;
  invoice.tasks.push(task.id);
  await ledger.write(task.invoiceId, invoice, lease.fencingToken);
}

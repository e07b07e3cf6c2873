/**
 * An AWS Lambda handler that serialises the work on one order across every concurrent
 * invocation (each runs in its own execution environment, often on another machine): it holds
 * the lock `order-${orderId}` for the event's order while it changes that order.
 *
 * - The client is made once per execution environment (at module load) and reused by warm
 *   invocations: one session, one connection.
 * - It waits in line at most until shortly before the invocation's own deadline
 *   (`context.getRemainingTimeInMillis()`), and its hold is bounded by that deadline too
 *   (`expiresIn`): if Lambda kills or freezes the environment mid-hold, the lock does not
 *   outlive the invocation.
 * - The callback form of `acquire` releases the lock when the work returns or throws.
 */
import { AcquireTimeoutError, type RateQueue, ratequeue } from "@ratequeue/sdk";
import { sleep } from "../shared/concurrency.js";

export interface OrderEvent {
  orderId: string;
  /** Items to add to the order (negative: a bad event, refused). */
  quantity: number;
}

/** The part of Lambda's context object the handler uses. */
export interface LambdaContext {
  awsRequestId: string;
  getRemainingTimeInMillis(): number;
}

export interface HandlerResult {
  statusCode: number;
  body: string;
}

/** Orders as a database would keep them (each call takes a few ms and yields). */
export class OrderTable {
  readonly #rows = new Map<string, { quantity: number; updates: number }>();
  async get(orderId: string) {
    await sleep(2);
    return { ...(this.#rows.get(orderId) ?? { quantity: 0, updates: 0 }) };
  }
  async put(orderId: string, row: { quantity: number; updates: number }) {
    await sleep(2);
    this.#rows.set(orderId, { ...row });
  }
}

export interface HandlerDeps {
  rq: RateQueue;
  orders: OrderTable;
  /** Time kept back from the invocation's deadline to answer after waiting in line, ms. */
  safetyMargin?: number;
  /** Observes the critical section (the tests count overlaps with it). */
  onEnter?: (orderId: string) => void;
  onLeave?: (orderId: string) => void;
}

export function createHandler(deps: HandlerDeps) {
  const { rq, orders, safetyMargin = 500 } = deps;
  return async (event: OrderEvent, context: LambdaContext): Promise<HandlerResult> => {
    const remaining = Math.floor(context.getRemainingTimeInMillis());
    try {
      return await rq.acquire(
        `order-${event.orderId}`,
        { timeout: Math.max(0, remaining - safetyMargin), expiresIn: Math.max(1, remaining) },
        async () => {
          deps.onEnter?.(event.orderId);
          try {
            const order = await orders.get(event.orderId);
            if (!Number.isInteger(event.quantity) || event.quantity < 0) {
              // Thrown mid-section: Lambda reports the invocation as failed, the lock is released.
              throw new Error(`order ${event.orderId}: bad quantity ${event.quantity}`);
            }
            order.quantity += event.quantity;
            order.updates += 1;
            await orders.put(event.orderId, order);
            return { statusCode: 200, body: JSON.stringify({ orderId: event.orderId, ...order }) };
          } finally {
            deps.onLeave?.(event.orderId);
          }
        },
      );
    } catch (error) {
      // Busy until too close to our deadline: answer 409 rather than be killed by the timeout.
      if (error instanceof AcquireTimeoutError) {
        return { statusCode: 409, body: JSON.stringify({ error: "order_busy" }) };
      }
      throw error;
    }
  };
}

/** What Lambda calls: configured from RATEQUEUE_URL / RATEQUEUE_API_KEY (the function's environment). */
export const handler = createHandler({ rq: ratequeue, orders: new OrderTable() });

/**
 * A small local stand-in for the Lambda service: it runs a handler many times at once, the way
 * Lambda does, so the handler's locking can be tested without AWS.
 *
 * - Each execution environment loads the handler module once (`load()`: a cold start, with its
 *   own RateQueue client and connection) and runs one invocation at a time; an invocation goes
 *   to an idle environment, else to a new one, up to `maxEnvironments`, else it waits.
 * - Each invocation has a deadline (`timeout`): `context.getRemainingTimeInMillis()` counts down
 *   to it, and an invocation still running then fails with "Task timed out", as on Lambda.
 */
import { randomUUID } from "node:crypto";
import type { LambdaContext } from "./handler.js";

export type Handler<E, R> = (event: E, context: LambdaContext) => Promise<R>;

export type Outcome<R> =
  | { ok: true; result: R; environment: number }
  | { ok: false; error: unknown; environment: number };

export interface LocalLambdaOptions {
  /** The invocation timeout, ms (Lambda's function timeout). Default 3 000. */
  timeout?: number;
  /** Concurrent execution environments at most (reserved concurrency). Default 10. */
  maxEnvironments?: number;
}

export function localLambda<E, R>(load: () => Handler<E, R>, options: LocalLambdaOptions = {}) {
  const { timeout = 3_000, maxEnvironments = 10 } = options;
  const idle: { id: number; handler: Handler<E, R> }[] = [];
  const waiting: Array<() => void> = [];
  let started = 0;

  async function environment() {
    for (;;) {
      const env = idle.pop();
      if (env) return env;
      if (started < maxEnvironments) return { id: ++started, handler: load() };
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
  }

  async function invoke(event: E): Promise<Outcome<R>> {
    const env = await environment();
    const deadline = Date.now() + timeout;
    const context: LambdaContext = {
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("Task timed out")), timeout);
    });
    try {
      const result = await Promise.race([env.handler(event, context), timedOut]);
      idle.push(env);
      return { ok: true, result, environment: env.id };
    } catch (error) {
      // Lambda recycles an environment whose invocation timed out; one that threw is reused.
      if (!(error instanceof Error && error.message === "Task timed out")) idle.push(env);
      else started--;
      return { ok: false, error, environment: env.id };
    } finally {
      clearTimeout(timer);
      waiting.shift()?.();
    }
  }

  return {
    invoke,
    /** Execution environments started so far (cold starts). */
    get coldStarts() {
      return started;
    },
  };
}

/**
 * A signal that aborts when any of `signals` aborts, or after `ms` (with `onTimeout()`'s reason).
 * `dispose()` removes every listener it added and clears its timer: call it on every path, so
 * that a long-lived caller signal (one AbortController for a whole worker) does not collect a
 * listener per call. `AbortSignal.any` is not used: it is missing on some edge runtimes and
 * on Node 20 keeps its sources alive longer than needed.
 */
export function linkSignals(
  signals: ReadonlyArray<AbortSignal | undefined>,
  ms?: number,
  onTimeout?: () => unknown,
): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const cleanups: Array<() => void> = [];
  const dispose = () => {
    for (const c of cleanups) c();
    cleanups.length = 0;
  };
  for (const s of signals) {
    if (s === undefined) continue;
    if (s.aborted) {
      controller.abort(s.reason);
      dispose();
      return { signal: controller.signal, dispose };
    }
    const onAbort = () => {
      controller.abort(s.reason);
      dispose();
    };
    s.addEventListener("abort", onAbort, { once: true });
    cleanups.push(() => s.removeEventListener("abort", onAbort));
  }
  if (ms !== undefined && Number.isFinite(ms)) {
    const timer = setTimeout(
      () => {
        controller.abort(
          onTimeout ? onTimeout() : new DOMException("The operation timed out.", "TimeoutError"),
        );
        dispose();
      },
      Math.max(0, ms),
    );
    // Never keep a process alive for a timer of ours (Node; no-op elsewhere).
    (timer as { unref?: () => void }).unref?.();
    cleanups.push(() => clearTimeout(timer));
  }
  return { signal: controller.signal, dispose };
}

/**
 * Resolves after `ms`, or rejects with `signal.reason` when it aborts. Unlike the timeouts above
 * (which always run beside a request that keeps the process alive), a retry's sleep keeps its
 * timer referenced: a script awaiting a lock must not exit in the middle of a backoff.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

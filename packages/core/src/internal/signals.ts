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

/** Callbacks waiting on each caller signal, behind one listener per signal. */
const watchers = new WeakMap<AbortSignal, { callbacks: Set<() => void>; listener: () => void }>();

/**
 * Calls `callback` when `signal` aborts; the returned function stops watching. However many
 * calls watch one signal (10,000 acquires sharing a worker's AbortController), the signal has
 * one listener — Node's EventTarget looks through every listener on each `addEventListener`, so
 * one per call would cost O(n²) — and it is removed as soon as nothing watches.
 */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let watch = watchers.get(signal);
  if (watch === undefined) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      watchers.delete(signal);
      for (const cb of callbacks) cb();
    };
    watch = { callbacks, listener };
    watchers.set(signal, watch);
    signal.addEventListener("abort", listener, { once: true });
  }
  const { callbacks, listener } = watch;
  callbacks.add(callback);
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0) return;
    if (watchers.get(signal)?.callbacks === callbacks) watchers.delete(signal);
    signal.removeEventListener("abort", listener);
  };
}

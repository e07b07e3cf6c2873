/** The names the chaos clients contend for: two locks and a semaphore. */
export const RESOURCES = [
  { name: "lock-a", capacity: 1 },
  { name: "lock-b", capacity: 1 },
  { name: "pool", capacity: 3 },
] as const;

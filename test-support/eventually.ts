/**
 * Polls `check` (every `every` ms) until it returns true, failing after `ms`. Only for state that has no event to
 * wait on (a server's counters seen over HTTP); everything with an event waits for the event.
 * Shared by the packages' tests.
 */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  ms = 5_000,
  every = 5,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, every));
  }
}

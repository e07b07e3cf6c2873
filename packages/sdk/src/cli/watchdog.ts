/**
 * Runs the command of `ratequeue run` for its parent, and stops it the moment the parent is
 * gone: a parent killed with SIGKILL cannot stop its child, but its IPC channel closes with it,
 * and then the lock is gone too (the server hands it on `grace` later), so the command must not
 * go on. Started by `run.ts` with an IPC channel; argv: the command and its arguments.
 */
import { spawn } from "node:child_process";

const [command, ...args] = process.argv.slice(2);
if (command === undefined || process.send === undefined) {
  process.stderr.write("ratequeue watchdog: started without a command or an IPC channel\n");
  process.exit(2);
}
// In a process group of its own, so that what it starts is stopped with it.
const child = spawn(command, args, { stdio: "inherit", detached: true });
const signalGroup = (signal: NodeJS.Signals) => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // the group is gone already
  }
};
child.once("error", (error) => {
  process.send?.({ t: "error", message: error.message });
  process.exit(127);
});
child.once("exit", (code, signal) => {
  process.send?.({ t: "exit", code, signal }, () => process.exit(0));
});
// The parent forwards signals as messages (it stays the one process the user signals).
process.on("message", (m: { t: string; signal?: NodeJS.Signals }) => {
  if (m.t === "signal" && m.signal !== undefined) signalGroup(m.signal);
});
process.once("disconnect", () => {
  // The parent died (or let go): the lease is gone, so is the right to run.
  signalGroup("SIGKILL");
  process.exit(1);
});
// The parent forwards the signals it gets (Ctrl-C included: the command's group is not the
// terminal's): the watchdog only must not die of one before its command has.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => {});

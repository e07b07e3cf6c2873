import { closeSync, ftruncateSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

interface FileLocks {
  tryLock(fd: number): boolean;
  unlock(fd: number): void;
}

/**
 * Holds `dir` for this process until the returned function is called: an exclusive OS lock on
 * `dir/server.lock` (fcntl/flock, LockFileEx on Windows, through fs-native-extensions' prebuilt
 * addon). The kernel drops the lock when the process dies however it dies, so a killed server
 * never blocks its restart — not even as PID 1 in a container, where a pid file would name the
 * new server itself. Throws if another server holds the directory.
 */
export function lockDirectory(dir: string): () => void {
  const file = join(dir, "server.lock");
  const fd = openSync(file, "a+");
  const locks = fileLocks();
  if (locks === undefined) return pidFileLock(file, fd);
  let held: boolean;
  try {
    held = locks.tryLock(fd);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  if (!held) {
    closeSync(fd);
    throw new Error(
      `cannot open the data directory ${dir}: another ratequeue-server${owner(file)} is using it`,
    );
  }
  const release = () => {
    locks.unlock(fd);
    closeSync(fd);
  };
  try {
    refuseLegacyOwner(dir);
  } catch (error) {
    release();
    throw error;
  }
  ftruncateSync(fd, 0);
  writeSync(fd, String(process.pid)); // for people: which process holds it
  return release;
}

/**
 * Servers of earlier versions held the directory with `server.pid` only, and know nothing of
 * the lock: while one still runs (an upgrade that starts the new server before the old one has
 * stopped), its pid is there and alive. Taken as stale if that process is gone — or is this one
 * or its parent (a restarted container's server has the killed one's pid).
 */
function refuseLegacyOwner(dir: string): void {
  const file = join(dir, "server.pid");
  const pid = liveOwner(file);
  if (pid !== undefined) {
    throw new Error(
      `cannot open the data directory ${dir}: a ratequeue-server of an earlier version (pid ${pid}) is using it: stop it first`,
    );
  }
  rmSync(file, { force: true });
}

let loaded: FileLocks | null | undefined;

/** The addon, or undefined where it has no prebuilt binary for this platform. */
function fileLocks(): FileLocks | undefined {
  if (loaded === undefined) {
    try {
      loaded = createRequire(import.meta.url)("fs-native-extensions") as FileLocks;
    } catch {
      loaded = null;
    }
  }
  return loaded ?? undefined;
}

/** Where no file lock can be had: the pid written in the file, unless it is stale (`liveOwner`). */
function pidFileLock(file: string, fd: number): () => void {
  const pid = liveOwner(file);
  if (pid !== undefined) {
    closeSync(fd);
    throw new Error(
      `cannot open the data directory ${file.slice(0, -"/server.lock".length)}: another ratequeue-server (pid ${pid}) is using it`,
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, String(process.pid));
  return () => {
    ftruncateSync(fd, 0);
    closeSync(fd);
  };
}

/**
 * The live process whose pid `file` holds, if any. A pid is stale if that process is gone — or
 * is this process or its parent (a restarted container's server has the killed one's pid), as
 * PostgreSQL's postmaster.pid rule has it.
 */
function liveOwner(file: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(file, "utf8").trim());
  } catch {
    return undefined; // no file
  }
  const other = Number.isInteger(pid) && pid > 0 && pid !== process.pid && pid !== process.ppid;
  return other && isAlive(pid) ? pid : undefined;
}

function owner(file: string): string {
  const pid = readFileSync(file, "utf8").trim();
  return /^\d+$/.test(pid) ? ` (pid ${pid})` : "";
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: only checks that the process exists
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

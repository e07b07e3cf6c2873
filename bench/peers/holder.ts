// A process that takes `key` with `peer`, says "holding", and holds until it is killed.
//
// With `relay` after the URL it holds on command instead: each "take" line on stdin takes `key`
// (then "holding"), each "release" line releases it, saying "released T" with T the time just
// before the release, `performance.timeOrigin + performance.now()` (comparable across processes).
import { createInterface } from "node:readline";
import {
  advisoryPeer,
  etcdPeer,
  REPLICAS,
  rateQueuePeer,
  redisSemaphorePeer,
  redlockPeer,
} from "./peers.js";

const [peerName, key, url, mode] = process.argv.slice(2) as [string, string, string, string?];
const peer =
  peerName === "RateQueue"
    ? rateQueuePeer(url)
    : peerName === REPLICAS
      ? rateQueuePeer(url.split(","), 256, true)
      : peerName === "redlock"
        ? redlockPeer("")
        : peerName === "redis-semaphore Mutex"
          ? redisSemaphorePeer("")
          : peerName === "etcd lock"
            ? etcdPeer("")
            : advisoryPeer("");
const worker = await peer.worker();
if (mode === "relay") {
  let release: (() => Promise<void>) | undefined;
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "take") {
      release = await worker.lock(key);
      process.stdout.write("holding\n");
    } else if (line === "release" && release) {
      const at = performance.timeOrigin + performance.now();
      await release();
      release = undefined;
      process.stdout.write(`released ${at}\n`);
    }
  }
  process.exit(0);
}
await worker.lock(key);
process.stdout.write("holding\n");
setInterval(() => {}, 1 << 30);

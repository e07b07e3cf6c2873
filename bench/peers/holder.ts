// A process that takes `key` with `peer`, says "holding", and holds until it is killed.
import { advisoryPeer, etcdPeer, rateQueuePeer, redisSemaphorePeer, redlockPeer } from "./peers.js";

const [peerName, key, url] = process.argv.slice(2) as [string, string, string];
const peer =
  peerName === "RateQueue"
    ? rateQueuePeer(url)
    : peerName === "redlock"
      ? redlockPeer("")
      : peerName === "redis-semaphore Mutex"
        ? redisSemaphorePeer("")
        : peerName === "etcd lock"
          ? etcdPeer("")
          : advisoryPeer("");
const worker = await peer.worker();
await worker.lock(key);
process.stdout.write("holding\n");
setInterval(() => {}, 1 << 30);

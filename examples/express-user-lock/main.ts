/**
 * `pnpm -C examples express-user-lock`: starts the app (and an embedded RateQueue server unless
 * RATEQUEUE_URL is set), sends 50 concurrent updates of one user and 5 of each of 10 others over
 * HTTP, and shows that no update was lost.
 */
import type { AddressInfo } from "node:net";
import { exampleServer } from "../shared/server.js";
import { createApp } from "./app.js";
import { UserStore } from "./store.js";

const rqServer = await exampleServer();
const store = new UserStore();
const http = createApp({ store }).listen(0, "127.0.0.1");
await new Promise((resolve) => http.once("listening", resolve));
const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
console.log(`app listening at ${base}`);

const put = (id: string, body: object) =>
  fetch(`${base}/users/${id}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }).then((res) => res.json());

const users = ["alice", ...Array.from({ length: 10 }, (_, i) => `user-${i}`)];
const started = Date.now();
await Promise.all(
  users.flatMap((id) =>
    Array.from({ length: id === "alice" ? 50 : 5 }, (_, n) => put(id, { name: `${id} #${n}` })),
  ),
);
console.log(`${50 + 10 * 5} concurrent PUTs answered in ${Date.now() - started} ms`);
for (const id of users.slice(0, 3)) {
  const user = await fetch(`${base}/users/${id}`).then((res) => res.json());
  console.log(`  ${id}: version ${user.version} (expected ${id === "alice" ? 50 : 5})`);
}

http.closeAllConnections();
http.close();
await rqServer.close();

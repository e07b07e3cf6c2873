// The `await using` form, alone in its module: a runtime that cannot parse it fails to load
// this file only, and the case falls back to try/finally (and says so).
export default async function usingCase(rq, name, inside) {
  await using lease = await rq.acquire(name);
  await inside(lease);
}

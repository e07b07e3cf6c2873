#!/usr/bin/env bash
# Installs the packed packages as a user of Node 20 would (npm, --engine-strict, no workspace,
# no overrides) and runs them: proves the tarballs carry what they need (README, LICENSE, dist)
# and that nothing in their dependency tree refuses Node 20.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$out"' EXIT
for p in core sdk server; do
  (cd "packages/$p" && npx -y pnpm@12.4.2 pack --pack-destination "$out" >/dev/null)
done
for tarball in "$out"/*.tgz; do
  for file in package/README.md package/LICENSE package/package.json; do
    tar -tzf "$tarball" | grep -x "$file" >/dev/null || { echo "$tarball lacks $file" >&2; exit 1; }
  done
done
cd "$out"
npm init -y >/dev/null
npm install --engine-strict --no-audit --no-fund ./ratequeue-core-*.tgz ./ratequeue-sdk-*.tgz ./ratequeue-server-*.tgz
npx ratequeue-server --port 0 --memory > server.out 2> server.err &
server_pid=$!
for _ in $(seq 100); do grep -q "ready at" server.out && break; sleep 0.1; done
url="$(grep 'ready at' server.out | grep -o 'http://[0-9.:]*' | head -1)"
RATEQUEUE_URL="$url" node --input-type=module -e '
  import { createRateQueue } from "@ratequeue/sdk";
  const rq = createRateQueue({ apiKey: "tarball-check" });
  const got = await rq.acquire("tarball-check", {}, async (lease) => lease.fencingToken);
  if (typeof got !== "number") throw new Error(`no fencing token: ${got}`);
  console.log("installed from the tarballs on Node", process.version, "and took a lease");
  process.exit(0);
'

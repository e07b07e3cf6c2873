import { createHmac } from "node:crypto";

/**
 * A namespace's id: a keyed hash (HMAC-SHA-256) of its API key. The engine and the store only
 * ever see ids, so a copy of the data directory gives away no key, and an id cannot be turned
 * back into one without the server's secret.
 */
export function namespaceId(secret: Buffer, apiKey: string): string {
  return createHmac("sha256", secret).update(apiKey).digest("base64url");
}

/** Most ids kept for keys that were not configured (open development mode: any token). */
const MAX_CACHED = 4096;

/** Maps bearer tokens to namespace ids, hashing each token once. */
export class NamespaceIds {
  private readonly cache = new Map<string, string>();

  constructor(
    private readonly secret: Buffer,
    apiKeys: readonly string[],
  ) {
    for (const key of apiKeys) this.cache.set(key, namespaceId(secret, key));
  }

  of(apiKey: string): string {
    let id = this.cache.get(apiKey);
    if (id === undefined) {
      id = namespaceId(this.secret, apiKey);
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(apiKey, id);
    }
    return id;
  }
}

import { describe, expect, it } from "vitest";
import { checkName, utf8Length } from "./validate.js";

describe("names", () => {
  it("counts UTF-8 bytes as the wire does", () => {
    for (const s of ["a", "é", "€", "🔒", "tenant/42 ü 🔒"])
      expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
  });

  it("accepts exactly 256 bytes and refuses 257", () => {
    expect(checkName("🔒".repeat(64))).toBeUndefined();
    expect(checkName(`${"🔒".repeat(64)}x`)).toMatch(/got 257/);
  });
});

import { describe, expect, it } from "vitest";
import { checkAcquireBody, checkLane, checkName, utf8Length } from "./validate.js";

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

describe("lanes", () => {
  it("accepts 1–64 characters of letters, digits and . _ -", () => {
    for (const lane of ["default", "batch", "tenant-42", "a.b_c", "x".repeat(64)])
      expect(checkLane(lane)).toBeUndefined();
    expect(checkLane("")).toMatch(/non-empty string/);
    expect(checkLane("x".repeat(65))).toMatch(/at most 64 characters, got 65/);
    for (const lane of ["a b", "a/b", "é", "a\nb"])
      expect(checkLane(lane)).toMatch(/letters, digits/);
    expect(checkLane(7)).toMatch(/non-empty string, got 7/);
  });

  it("is an acquire field, checked as such", () => {
    expect(checkAcquireBody({ resource: "r", lane: "batch" }, { maxExpiresIn: 1_000 })).toEqual({
      ok: true,
      value: { resource: "r", lane: "batch" },
    });
    expect(checkAcquireBody({ resource: "r", lane: "a b" }, { maxExpiresIn: 1_000 })).toMatchObject(
      {
        ok: false,
        problem: { field: "lane" },
      },
    );
  });
});

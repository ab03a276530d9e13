import { describe, expect, it } from "vitest";
import { errorResponse, toOciError } from "../../src/http/errors.ts";
import { errorBody, OciError } from "../../src/oci/errors.ts";

describe("errorResponse", () => {
  it("answers the OCI error JSON with the status paired with the code", async () => {
    const res = errorResponse(new OciError("BLOB_UNKNOWN", "blob unknown to registry"));
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown to registry" }] });
    expect(res.headers.get("content-length")).toBe(String(text.length));
  });

  it("maps codes to distribution-spec statuses", () => {
    const cases: [ConstructorParameters<typeof OciError>[0], number][] = [
      ["DIGEST_INVALID", 400],
      ["NAME_INVALID", 400],
      ["NAME_UNKNOWN", 404],
      ["MANIFEST_UNKNOWN", 404],
      ["DENIED", 403],
      ["UNSUPPORTED", 405],
      ["RANGE_INVALID", 416],
      ["TOOMANYREQUESTS", 429],
    ];
    for (const [code, status] of cases) expect(errorResponse(new OciError(code, "m")).status, code).toBe(status);
  });

  it("includes detail only when given, and honours an explicit status and extra headers", async () => {
    const res = errorResponse(new OciError("TOOMANYREQUESTS", "slow down", { detail: { limit: 100 }, headers: { "Retry-After": "30" }, status: 503 }));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("30");
    expect(await res.json()).toEqual({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down", detail: { limit: 100 } }] });
    expect(JSON.parse(errorBody("UNKNOWN", "x")).errors[0]).not.toHaveProperty("detail");
  });

  it("counts Content-Length in bytes, not characters", async () => {
    const res = errorResponse(new OciError("NAME_INVALID", "invalid repository name: \"ünïcødé→\""));
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect(Number(res.headers.get("content-length"))).toBe(bytes.byteLength);
    expect(bytes.byteLength).toBeGreaterThan(JSON.stringify({ errors: [{ code: "NAME_INVALID", message: "invalid repository name: \"ünïcødé→\"" }] }).length);
  });

  it("sends no body to HEAD but keeps status and headers", async () => {
    const res = errorResponse(new OciError("MANIFEST_UNKNOWN", "manifest unknown", { headers: { "X-Extra": "1" } }), "HEAD");
    expect(res.status).toBe(404);
    expect(res.body).toBeNull();
    expect(await res.text()).toBe("");
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("x-extra")).toBe("1");
  });

  it("lets the error's own Content-Type never leak through", () => {
    const res = errorResponse(new OciError("UNKNOWN", "x", { headers: { "Content-Type": "text/html" } }));
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  });
});

describe("toOciError", () => {
  it("passes an OciError through unchanged", () => {
    const err = new OciError("DENIED", "no");
    expect(toOciError(err)).toBe(err);
  });

  it("turns anything else into UNKNOWN/500 without revealing its message or stack", async () => {
    const internal = new Error("EACCES: permission denied, open '/var/lib/skiff/secret-token'");
    for (const thrown of [internal, "a string with /etc/shadow", { password: "hunter2" }, null]) {
      const oci = toOciError(thrown);
      expect(oci.code).toBe("UNKNOWN");
      expect(oci.status).toBe(500);
      const text = await errorResponse(oci).text();
      expect(text).not.toMatch(/secret|shadow|hunter2|EACCES|at /);
      expect(JSON.parse(text).errors[0].code).toBe("UNKNOWN");
    }
  });
});

/** Shared helpers for the tests that run inside workerd. */
import { env } from "cloudflare:workers";

export const TOKEN = "test-tensors-token";

export interface ManifestItem {
  file: string;
  format: string;
  mode: string;
  width: number;
  height: number;
  reference_rgb_sha256: string;
  reference_f16_sha256: string;
  exif_orientation?: number;
  oriented_rgb_sha256?: string;
  oriented_f16_sha256?: string;
}

/** Fixture bytes come from the loopback server that test/support/loopback-server.ts starts. */
export async function fixture(path: string): Promise<Uint8Array> {
  const res = await fetch(`${env.LOOPBACK_ORIGIN}/${path}`);
  if (!res.ok) throw new Error(`fixture ${path}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export async function sha256Hex(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

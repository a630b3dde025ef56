// Name-based UUIDs (RFC 9562 version 5, SHA-1) for deterministic event ids, as Rust's
// `eventhost_sdk::id::v5` and Python's `uuid.uuid5` compute them: the same name gives the
// same id in every language, so a re-delivered batch emits the same events.
//
//   import { uuid5 } from './uuid5.js';
//   const id = uuid5(`eventhost:inventory:${event.id}`);   // in the URL namespace
//
// A plugin has no crypto API (no `crypto.subtle`, no node:crypto), hence the SHA-1 below.
// Copy this file beside your plugin's source and import it; it needs only TextEncoder.
// Its tests: node --test sdk/javascript/

/** The RFC's URL namespace: the default, as in the guides' examples. */
export const NAMESPACE_URL = '6ba7b811-9dad-11d1-80b4-00c04fd430c8';
/** The RFC's DNS namespace. */
export const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

/** The version 5 UUID of `name` (a string, hashed as UTF-8) in `namespace` (a UUID string). */
export function uuid5(name, namespace = NAMESPACE_URL) {
  if (typeof name !== 'string') {
    throw new TypeError(`uuid5 needs a string name, got ${typeof name}`);
  }
  const text = new TextEncoder().encode(name);
  const input = new Uint8Array(16 + text.length);
  input.set(parseUuid(namespace));
  input.set(text, 16);
  const bytes = sha1(input).slice(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return formatUuid(bytes);
}

function parseUuid(text) {
  const hex = String(text).replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new TypeError(`not a UUID: ${text}`);
  }
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

function formatUuid(bytes) {
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)]
    .join('-');
}

/** The SHA-1 digest (20 bytes) of `message` (a Uint8Array), per FIPS 180-4. */
export function sha1(message) {
  const blocks = Math.ceil((message.length + 9) / 64);
  const padded = new Uint8Array(blocks * 64);
  padded.set(message);
  padded[message.length] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = message.length * 8;
  view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(padded.length - 4, bits >>> 0);
  const h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
  const w = new Uint32Array(80);
  for (let block = 0; block < blocks; block++) {
    for (let i = 0; i < 16; i++) {
      w[i] = view.getUint32(block * 64 + 4 * i);
    }
    for (let i = 16; i < 80; i++) {
      const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
      w[i] = (x << 1) | (x >>> 31);
    }
    let [a, b, c, d, e] = h;
    for (let i = 0; i < 80; i++) {
      let f;
      let k;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5a827999;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ed9eba1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8f1bbcdc;
      } else {
        f = b ^ c ^ d;
        k = 0xca62c1d6;
      }
      const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
      e = d;
      d = c;
      c = ((b << 30) | (b >>> 2)) >>> 0;
      b = a;
      a = t;
    }
    h[0] = (h[0] + a) >>> 0;
    h[1] = (h[1] + b) >>> 0;
    h[2] = (h[2] + c) >>> 0;
    h[3] = (h[3] + d) >>> 0;
    h[4] = (h[4] + e) >>> 0;
  }
  const digest = new Uint8Array(20);
  const out = new DataView(digest.buffer);
  h.forEach((word, i) => out.setUint32(4 * i, word));
  return digest;
}

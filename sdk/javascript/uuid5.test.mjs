// uuid5.js gives the ids of sdk/uuid5-vectors.json, which Python's uuid.uuid5 computed and
// the Rust SDK's test also checks: the same name, the same id, in every language.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { NAMESPACE_URL, sha1, uuid5 } from './uuid5.js';

const vectors = JSON.parse(
  readFileSync(new URL('../uuid5-vectors.json', import.meta.url), 'utf8'),
).vectors;

test('gives the ids Python and Rust give for the same names', () => {
  assert.ok(vectors.length >= 10);
  for (const { namespace, name, id } of vectors) {
    assert.equal(uuid5(name, namespace), id, `name ${JSON.stringify(name)}`);
  }
});

test('defaults to the URL namespace', () => {
  const { name, id } = vectors.find((vector) => vector.namespace === NAMESPACE_URL);
  assert.equal(uuid5(name), id);
});

test('hashes with SHA-1 across block boundaries', () => {
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  const text = (s) => new TextEncoder().encode(s);
  assert.equal(hex(sha1(text(''))), 'da39a3ee5e6b4b0d3255bfef95601890afd80709');
  assert.equal(hex(sha1(text('abc'))), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  assert.equal(
    hex(sha1(text('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))),
    '84983e441c3bd26ebaae4aa1f95129e5e54670f1',
  );
  assert.equal(hex(sha1(text('a'.repeat(1000000)))), '34aa973cd4c4daa4f61eeb2bdbad27316534016f');
});

test('refuses what is not a name or not a namespace', () => {
  assert.throws(() => uuid5(42), /string name/);
  assert.throws(() => uuid5('x', 'not-a-uuid'), /not a UUID/);
});

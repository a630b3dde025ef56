// Unit tests of strict-json.js, run by node itself (no build): node --test
//
// The expected messages are those the Rust order-totals plugin reported (through serde_json)
// for the same payload texts, as the host delivers them: compact, keys sorted.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decode, decodeStrictly, formatFloat, i64, string, struct, u64, vec } from './strict-json.js';

const Line = struct('Line', [
  ['quantity', i64],
  ['unit_price_cents', i64],
]);
const OrderCreated = struct('OrderCreated', [
  ['customer', string],
  ['lines', vec(Line)],
]);

function message(text, type) {
  try {
    decode(text, type);
  } catch (error) {
    return error.message;
  }
  assert.fail(`${text} decoded`);
}

test('wrong types and missing fields fail with serde_json messages', () => {
  const line = (quantity) => `{"customer":"ada","lines":[{"quantity":${quantity},"sku":"x","unit_price_cents":100}]}`;
  assert.equal(message(line('"2"'), OrderCreated), 'invalid type: string "2", expected i64 at line 1 column 42');
  assert.equal(message(line('2.0'), OrderCreated), 'invalid type: floating point `2.0`, expected i64 at line 1 column 42');
  assert.equal(message(line('true'), OrderCreated), 'invalid type: boolean `true`, expected i64 at line 1 column 43');
  assert.equal(
    message('{"lines":[{"quantity":1,"sku":"x","unit_price_cents":100}]}', OrderCreated),
    'missing field `customer` at line 1 column 59',
  );
  assert.equal(message('{"customer":5,"lines":[]}', OrderCreated), 'invalid type: integer `5`, expected a string at line 1 column 13');
  assert.equal(message('{"customer":"ada","lines":{}}', OrderCreated), 'invalid type: map, expected a sequence at line 1 column 26');
  assert.equal(message('[2]', Line), 'invalid length 1, expected struct Line with 2 elements at line 1 column 3');
  assert.equal(message('[2,3,4]', Line), 'trailing characters at line 1 column 6');
  assert.equal(message('null', Line), 'invalid type: null, expected struct Line at line 1 column 4');
});

test('integers are exact over the whole 64-bit range', () => {
  assert.deepEqual(decode('{"quantity":-9223372036854775808,"unit_price_cents":9007199254740993}', Line), {
    quantity: -9223372036854775808n,
    unit_price_cents: 9007199254740993n,
  });
  assert.equal(
    message('{"quantity":9223372036854775808,"unit_price_cents":1}', Line),
    'invalid value: integer `9223372036854775808`, expected i64 at line 1 column 31',
  );
  assert.equal(message('-1', u64), 'invalid value: integer `-1`, expected u64 at line 1 column 2');
});

test('floats print as serde_json prints them', () => {
  assert.deepEqual(
    [1e20, 2, -0, 0.000015, 1.5e300, 5e-324, 0.1].map(formatFloat),
    ['1e+20', '2.0', '-0.0', '0.000015', '1.5e+300', '5e-324', '0.1'],
  );
});

test('the JSON.parse fast path agrees with the strict reader', () => {
  const texts = [
    '{"customer":"a","lines":[{"quantity":2,"sku":"x","unit_price_cents":-3}]}',
    '{"customer":"a","lines":[[2,3]]}',
    '{"customer":"v1.5","lines":[]}',
    '{"customer":"a","lines":[{"quantity":-0,"unit_price_cents":1}]}',
    '{"customer":"a\\ud800","lines":[]}',
    '{"customer":"a","lines":[{"quantity":1234567890123456,"unit_price_cents":1}]}',
    '{"customer":"a","lines":[{"quantity":1,"unit_price_cents":1}],"extra":{"deep":[null,true]}}',
  ];
  const outcome = (decoder, text) => {
    try {
      return decoder(text, OrderCreated);
    } catch (error) {
      return error.message;
    }
  };
  for (const text of texts) assert.deepEqual(outcome(decode, text), outcome(decodeStrictly, text), text);
});

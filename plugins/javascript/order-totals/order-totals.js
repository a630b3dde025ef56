// order-totals-js: the order-totals read model, in JavaScript (componentize-js).
//
// The specification is the doc comment of plugins/rust/order-totals/src/lib.rs; from the same
// events this plugin writes byte-identical state values, the same warn lines and the same
// errors. Only its name differs ("order-totals-js"), so that the versions can run side by side.
//
// Amounts are BigInts checked against the i64 range, as the Rust version's checked i64
// arithmetic does: results are exact, and an overflow fails the batch, not retryable.
// Payloads are decoded by strict-json.js, which rejects what serde_json rejects (a quantity of
// "2", true, 2.5 or 2.0) with the same message; JSON.parse cannot tell 2.0 from 2.

import { log, stateGet, stateSet } from 'eventhost:plugin/host@0.1.3';
import { DecodeError, decode, i64, string, struct, u64, vec } from './strict-json.js';

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

const Line = struct('Line', [
  ['quantity', i64],
  ['unit_price_cents', i64],
]);
const OrderCreated = struct('OrderCreated', [
  ['customer', string],
  ['lines', vec(Line)],
]);
const Order = struct('Order', [
  ['customer', string],
  ['status', string],
  ['lines', u64],
  ['total_cents', i64],
]);
const Customer = struct('Customer', [
  ['orders', u64],
  ['paid_cents', i64],
]);

export function describe() {
  return {
    name: 'order-totals-js',
    version: '1.0.0',
    subscriptions: [
      {
        name: 'totals',
        aggregateTypes: ['order'],
        eventTypes: [],
        batchSize: 100,
        startFrom: 'beginning',
      },
    ],
  };
}

export function handle(_subscription, batch) {
  for (const event of batch) {
    switch (event.eventType) {
      case 'order.created':
        created(event);
        break;
      case 'order.line-added':
        lineAdded(event);
        break;
      case 'order.paid':
        paid(event);
        break;
      case 'order.cancelled':
        cancelled(event);
        break;
    }
  }
}

function created(event) {
  const payload = decodePayload(event, OrderCreated);
  const id = event.stream.aggregateId;
  if (getState(orderKey(id), Order) !== undefined) {
    log('warn', `order.created for existing order ${id} ignored`);
    return;
  }
  let totalCents = 0n;
  for (const line of payload.lines) {
    totalCents = add(event, totalCents, amount(event, line));
  }
  const order = {
    customer: payload.customer,
    status: 'open',
    lines: BigInt(payload.lines.length),
    total_cents: totalCents,
  };
  setState(orderKey(id), order);
  const customer = customerOf(order.customer);
  customer.orders += 1n;
  setState(customerKey(order.customer), customer);
}

function lineAdded(event) {
  const line = decodePayload(event, Line);
  const order = orderOf(event);
  if (order === undefined) return;
  order.lines += 1n;
  order.total_cents = add(event, order.total_cents, amount(event, line));
  setState(orderKey(event.stream.aggregateId), order);
}

function paid(event) {
  const order = orderOf(event);
  if (order === undefined || order.status === 'paid') return;
  order.status = 'paid';
  setState(orderKey(event.stream.aggregateId), order);
  const customer = customerOf(order.customer);
  customer.paid_cents = add(event, customer.paid_cents, order.total_cents);
  setState(customerKey(order.customer), customer);
}

function cancelled(event) {
  const order = orderOf(event);
  if (order === undefined) return;
  order.status = 'cancelled';
  setState(orderKey(event.stream.aggregateId), order);
}

/** The state of the event's order, or undefined (logged) when the order is unknown. */
function orderOf(event) {
  const id = event.stream.aggregateId;
  const order = getState(orderKey(id), Order);
  if (order === undefined) log('warn', `${event.eventType} for unknown order ${id} ignored`);
  return order;
}

function customerOf(name) {
  return getState(customerKey(name), Customer) ?? { orders: 0n, paid_cents: 0n };
}

const orderKey = (aggregateId) => `order/${aggregateId}`;
const customerKey = (customer) => `customer/${customer}`;

function amount(event, line) {
  return checked(event, line.quantity * line.unit_price_cents);
}

function add(event, a, b) {
  return checked(event, a + b);
}

function checked(event, value) {
  if (value < I64_MIN || value > I64_MAX) {
    throw permanent(`event ${event.id} (${event.eventType}): amount overflows a 64-bit integer`);
  }
  return value;
}

// Handler errors. componentize-js turns a thrown value with an own `payload` property into the
// `err` of `handle`'s result; the payload is the WIT `handler-error` record.

class HandlerError extends Error {
  constructor(message, retryable) {
    super(message);
    this.payload = { message, retryable };
  }
}

const permanent = (message) => new HandlerError(message, false);
const transient = (message) => new HandlerError(message, true);

function decodePayload(event, type) {
  try {
    return decode(event.payload, type);
  } catch (error) {
    if (!(error instanceof DecodeError)) throw error;
    throw permanent(`event ${event.id} (${event.eventType}): payload does not decode: ${error.message}`);
  }
}

// State values are compact JSON with fields in insertion order; BigInts print as integers.

function getState(key, type) {
  const value = hostCall(() => stateGet(key));
  if (value === undefined) return undefined;
  try {
    return decode(value, type);
  } catch (error) {
    if (!(error instanceof DecodeError)) throw error;
    throw permanent(`state key ${key}: value does not decode: ${error.message}`);
  }
}

function setState(key, value) {
  hostCall(() => stateSet(key, toJson(value)));
}

function toJson(value) {
  const fields = Object.entries(value).map(([name, field]) => {
    const text = typeof field === 'bigint' ? field.toString() : JSON.stringify(field);
    return `${JSON.stringify(name)}:${text}`;
  });
  return `{${fields.join(',')}}`;
}

// A failed host call throws a ComponentError whose `payload` is the WIT `host-error` variant.
// Convert it the way the Rust SDK does: a conflict or an unavailable host may clear up on a
// retry; invalid input or an exceeded cap will not.
function hostCall(call) {
  try {
    return call();
  } catch (error) {
    const hostError = error?.payload;
    if (hostError?.tag === undefined) throw error;
    throw handlerErrorOf(hostError);
  }
}

function handlerErrorOf({ tag, val }) {
  switch (tag) {
    case 'conflict':
      return transient(conflictMessage(val));
    case 'unavailable':
      return transient(`host unavailable: ${val}`);
    case 'invalid':
      return permanent(`rejected by host: ${val}`);
    default:
      return permanent(`host limit exceeded: ${val}`);
  }
}

function conflictMessage({ stream, expected, actual }) {
  const wanted = { any: 'any version', 'no-stream': 'no stream' }[expected.tag] ?? `version ${expected.val}`;
  return `version conflict on stream ${stream.aggregateType}/${stream.aggregateId}: expected ${wanted}, found version ${actual}`;
}

// {{name}}: stock on hand per SKU, and a `stock.low` alert when a sale takes it below
// LOW_STOCK. Made by `eventhost new`; README.md says how to build, test and deploy it.
//
// Subscription `stock`: the `stock.received` and `stock.sold` events of aggregate type `sku`,
// payload `{"quantity": <1 to 1000000000>}`. State key `on-hand/<sku>` holds the JSON integer
// on hand. A sale that takes it from LOW_STOCK or more to below emits `stock.low` (payload
// `{"sku": ..., "on_hand": ...}`) to stream `stock-alert/<sku>`, with an id derived from the
// sale's id: a batch handled again emits the same event, which is stored once.

import { emit, log, stateGet, stateSet } from 'eventhost:plugin/host@0.1.3';
import { uuid5 } from './uuid5.js';

const PLUGIN = '{{name}}';

/** Below this many on hand, a SKU is low. */
const LOW_STOCK = 5;

/** The largest quantity one event may move. */
const MAX_QUANTITY = 1_000_000_000;

/** The largest amount on hand, either way: beyond it numbers lose precision. */
const MAX_ON_HAND = Number.MAX_SAFE_INTEGER;

/** Thrown to fail the batch: componentize-js returns an own `payload` as `handle`'s error. */
class HandlerError extends Error {
  constructor(message, retryable) {
    super(message);
    this.payload = { message, retryable };
  }
}

export function describe() {
  return {
    name: PLUGIN,
    version: '0.1.0',
    subscriptions: [
      {
        name: 'stock',
        aggregateTypes: ['sku'],
        eventTypes: ['stock.received', 'stock.sold'],
        batchSize: 100,
        startFrom: 'beginning',
      },
    ],
  };
}

export function handle(_subscription, batch) {
  try {
    for (const event of batch) apply(event);
  } catch (error) {
    if (error instanceof HandlerError) throw error;
    const hostError = error?.payload;
    if (hostError?.tag !== undefined) {
      // A host call failed: retry the batch only when that may help.
      const retryable = hostError.tag === 'unavailable' || hostError.tag === 'conflict';
      throw new HandlerError(`host call failed: ${hostError.tag}: ${JSON.stringify(hostError.val)}`, retryable);
    }
    // A bug: keep its type and stack in the error an operator sees.
    throw new HandlerError(`${error}\n${error?.stack ?? ''}`, false);
  }
}

function apply(event) {
  const quantity = quantityOf(event);
  const sku = event.stream.aggregateId;
  const key = `on-hand/${sku}`;
  const stored = stateGet(key);
  const before = stored === undefined ? 0 : JSON.parse(stored);
  const after = event.eventType === 'stock.received' ? before + quantity : before - quantity;
  if (Math.abs(after) > MAX_ON_HAND) {
    // The same event fails the same way every time: not retryable.
    throw new HandlerError(
      `event ${event.id} (${event.eventType}): ${sku} on hand would leave the range of ±${MAX_ON_HAND}`,
      false,
    );
  }
  stateSet(key, JSON.stringify(after));
  if (before >= LOW_STOCK && after < LOW_STOCK) {
    const alert = {
      id: uuid5(`eventhost:${PLUGIN}:stock.low:${event.id}`),
      eventType: 'stock.low',
      payload: JSON.stringify({ sku, on_hand: after }),
      metadata: [['causation-id', event.id]],
    };
    emit({ aggregateType: 'stock-alert', aggregateId: sku }, { tag: 'any' }, [alert]);
    log('info', `stock of ${sku} is low: ${after} on hand`);
  }
}

/** The event's quantity, or a non-retryable error naming the event. */
function quantityOf(event) {
  let quantity;
  try {
    quantity = JSON.parse(event.payload)?.quantity;
  } catch {
    quantity = undefined;
  }
  // JSON.parse reads 2.0 as 2: a whole number either way.
  if (!Number.isInteger(quantity) || quantity < 1 || quantity > MAX_QUANTITY) {
    throw new HandlerError(
      `event ${event.id} (${event.eventType}): the payload needs a whole \`quantity\` from 1 to ${MAX_QUANTITY}`,
      false,
    );
  }
  return quantity;
}

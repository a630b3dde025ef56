"""{{name}}: stock on hand per SKU, and a `stock.low` alert when a sale takes it below LOW_STOCK.

Made by `eventhost new`; README.md says how to build, test and deploy it.

Subscription `stock`: the `stock.received` and `stock.sold` events of aggregate type `sku`,
payload `{"quantity": <1 to 1000000000>}`. State key `on-hand/<sku>` holds the JSON integer on
hand. A sale that takes it from LOW_STOCK or more to below emits `stock.low` (payload
`{"sku": ..., "on_hand": ...}`) to stream `stock-alert/<sku>`, with an id derived from the
sale's id: a batch handled again emits the same event, which is stored once.
"""

# Import every module here, at module level: the component has no files at run time, so a
# module first imported inside `handle` does not exist. uuid.uuid5 imports hashlib lazily.
import hashlib  # noqa: F401
import json
import uuid

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import host
from wit_world.imports.types import (
    ExpectedVersion_Any,
    HandlerError,
    HostError_Conflict,
    HostError_Unavailable,
    Level,
    NewEvent,
    PluginInfo,
    StartFrom,
    StreamId,
    Subscription,
)

PLUGIN = "{{name}}"

# Below this many on hand, a SKU is low.
LOW_STOCK = 5

# The largest quantity one event may move.
MAX_QUANTITY = 1_000_000_000

# The largest amount on hand, either way: beyond it JavaScript numbers lose precision.
MAX_ON_HAND = 2**53 - 1


class WitWorld(World):
    def describe(self) -> PluginInfo:
        stock = Subscription(
            name="stock",
            aggregate_types=["sku"],
            event_types=["stock.received", "stock.sold"],
            batch_size=100,
            start_from=StartFrom.BEGINNING,
        )
        return PluginInfo(name=PLUGIN, version="0.1.0", subscriptions=[stock])

    def handle(self, subscription: str, batch) -> None:
        try:
            for event in batch:
                apply(event)
        except Err as error:
            if isinstance(error.value, HandlerError):
                raise
            # A host call failed: retry the batch only when that may help.
            retryable = isinstance(error.value, (HostError_Unavailable, HostError_Conflict))
            raise Err(HandlerError(f"host call failed: {error.value}", retryable))


def apply(event) -> None:
    quantity = quantity_of(event)
    sku = event.stream.aggregate_id
    key = f"on-hand/{sku}"
    stored = host.state_get(key)
    before = 0 if stored is None else json.loads(stored)
    after = before + quantity if event.event_type == "stock.received" else before - quantity
    if abs(after) > MAX_ON_HAND:
        # The same event fails the same way every time: not retryable.
        raise Err(HandlerError(
            f"event {event.id} ({event.event_type}): {sku} on hand would leave the range "
            f"of ±{MAX_ON_HAND}", False))
    host.state_set(key, json.dumps(after))
    if before >= LOW_STOCK > after:
        alert = NewEvent(
            id=deterministic_id(f"eventhost:{PLUGIN}:stock.low:{event.id}"),
            event_type="stock.low",
            payload=compact({"sku": sku, "on_hand": after}),
            metadata=[("causation-id", event.id)],
        )
        host.emit(StreamId("stock-alert", sku), ExpectedVersion_Any(), [alert])
        host.log(Level.INFO, f"stock of {sku} is low: {after} on hand")


def quantity_of(event) -> int:
    """The event's quantity, or a non-retryable error naming the event."""
    try:
        quantity = json.loads(event.payload).get("quantity")
    except (ValueError, AttributeError):
        quantity = None
    # bool is an int in Python, and JSON's 2.0 is a float: neither is a whole quantity here.
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise Err(HandlerError(
            f"event {event.id} ({event.event_type}): the payload needs a whole `quantity` "
            f"from 1 to {MAX_QUANTITY}", False))
    return quantity


def deterministic_id(name: str) -> str:
    """The version 5 UUID of `name` in the URL namespace, as every eventhost SDK computes it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def compact(value) -> str:
    """JSON text as the Rust SDK writes it: no spaces, non-ASCII left as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

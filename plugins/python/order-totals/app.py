"""order-totals-py: the order-totals projection in Python (componentize-py).

Follows the specification in plugins/rust/order-totals/src/lib.rs to the byte: same state keys
and compact JSON values, same warn logs, same non-retryable errors; only the plugin's name
differs, so both can run in one daemon. Payloads decode by the rules of the Rust version's serde
types (no bool or float for an integer, extra fields ignored, structs also as arrays), and
Python's unbounded ints are checked against i64 wherever Rust's checked arithmetic would fail.
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import host
from wit_world.imports.types import (
    ExpectedVersion_Any,
    ExpectedVersion_Exact,
    ExpectedVersion_NoStream,
    HandlerError,
    HostError_Conflict,
    HostError_Invalid,
    HostError_LimitExceeded,
    HostError_Unavailable,
    Level,
    PluginInfo,
    StartFrom,
    Subscription,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class WitWorld(World):
    def describe(self) -> PluginInfo:
        totals = Subscription(
            name="totals",
            aggregate_types=["order"],
            event_types=[],
            batch_size=100,
            start_from=StartFrom.BEGINNING,
        )
        return PluginInfo(name="order-totals-py", version="1.0.0", subscriptions=[totals])

    def handle(self, subscription, batch) -> None:
        for event in batch:
            apply = HANDLERS.get(event.event_type)
            if apply is not None:
                apply(event)


# --- event handlers -------------------------------------------------------------------------


def created(event) -> None:
    customer_name, lines = decode(event, ORDER_CREATED)
    order_id = event.stream.aggregate_id
    if state_get(order_key(order_id)) is not None:
        warn(f"order.created for existing order {order_id} ignored")
        return
    total_cents = 0
    for quantity, unit_price_cents in lines:
        total_cents = checked(event, total_cents + checked(event, quantity * unit_price_cents))
    order = order_value(customer_name, "open", len(lines), total_cents)
    state_set(order_key(order_id), order)
    customer = customer_state(customer_name)
    state_set(customer_key(customer_name), customer_value(customer["orders"] + 1, customer["paid_cents"]))


def line_added(event) -> None:
    quantity, unit_price_cents = decode(event, LINE)
    order = known_order(event)
    if order is None:
        return
    total_cents = checked(event, order["total_cents"] + checked(event, quantity * unit_price_cents))
    updated = order_value(order["customer"], order["status"], order["lines"] + 1, total_cents)
    state_set(order_key(event.stream.aggregate_id), updated)


def paid(event) -> None:
    order = known_order(event)
    if order is None or order["status"] == "paid":
        return
    updated = order_value(order["customer"], "paid", order["lines"], order["total_cents"])
    state_set(order_key(event.stream.aggregate_id), updated)
    customer = customer_state(order["customer"])
    paid_cents = checked(event, customer["paid_cents"] + order["total_cents"])
    state_set(customer_key(order["customer"]), customer_value(customer["orders"], paid_cents))


def cancelled(event) -> None:
    order = known_order(event)
    if order is None:
        return
    updated = order_value(order["customer"], "cancelled", order["lines"], order["total_cents"])
    state_set(order_key(event.stream.aggregate_id), updated)


HANDLERS = {
    "order.created": created,
    "order.line-added": line_added,
    "order.paid": paid,
    "order.cancelled": cancelled,
}


# --- state ----------------------------------------------------------------------------------


def order_key(aggregate_id: str) -> str:
    return f"order/{aggregate_id}"


def customer_key(customer: str) -> str:
    return f"customer/{customer}"


def order_value(customer: str, status: str, lines: int, total_cents: int) -> dict:
    # Field order is part of the stored bytes: the same as the Rust struct's.
    return {"customer": customer, "status": status, "lines": lines, "total_cents": total_cents}


def customer_value(orders: int, paid_cents: int) -> dict:
    return {"orders": orders, "paid_cents": paid_cents}


def known_order(event):
    """The event's order, or None (logged) when the order is unknown."""
    order_id = event.stream.aggregate_id
    order = state_get(order_key(order_id))
    if order is None:
        warn(f"{event.event_type} for unknown order {order_id} ignored")
    return order


def customer_state(name: str) -> dict:
    customer = state_get(customer_key(name))
    return customer if customer is not None else customer_value(0, 0)


def state_get(key: str):
    try:
        value = host.state_get(key)
    except Err as error:
        raise Err(host_failure(error.value))
    return None if value is None else json.loads(value)


def state_set(key: str, value: dict) -> None:
    # Compact, non-ASCII unescaped: byte for byte what serde_json::to_string writes.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        host.state_set(key, text)
    except Err as error:
        raise Err(host_failure(error.value))


def host_failure(error) -> HandlerError:
    """A failed host call as the Rust SDK reports it: transient unless retrying cannot help."""
    if isinstance(error, HostError_Conflict):
        conflict = error.value
        stream = f"{conflict.stream.aggregate_type}/{conflict.stream.aggregate_id}"
        expected = {
            ExpectedVersion_Any: lambda: "any version",
            ExpectedVersion_NoStream: lambda: "no stream",
            ExpectedVersion_Exact: lambda: f"version {conflict.expected.value}",
        }[type(conflict.expected)]()
        return HandlerError(f"version conflict on stream {stream}: expected {expected}, "
                            f"found version {conflict.actual}", True)
    if isinstance(error, HostError_Unavailable):
        return HandlerError(f"host unavailable: {error.value}", True)
    if isinstance(error, HostError_Invalid):
        return HandlerError(f"rejected by host: {error.value}", False)
    if isinstance(error, HostError_LimitExceeded):
        return HandlerError(f"host limit exceeded: {error.value}", False)
    return HandlerError(f"host error: {error!r}", True)


def warn(message: str) -> None:
    host.log(Level.WARN, message)


def checked(event, amount: int) -> int:
    """`amount`, or a non-retryable error when it leaves i64 (where Rust's checked ops fail)."""
    if not I64_MIN <= amount <= I64_MAX:
        raise Err(HandlerError(
            f"event {event.id} ({event.event_type}): amount overflows a 64-bit integer", False))
    return amount


# --- payloads, decoded by the rules of the Rust version's serde types -----------------------


class PayloadError(Exception):
    pass


def decode(event, shape):
    """The payload decoded into `shape`, or a non-retryable error naming the event."""
    try:
        return shape(json.loads(event.payload))
    except (PayloadError, ValueError) as error:
        raise Err(HandlerError(
            f"event {event.id} ({event.event_type}): payload does not decode: {error}", False))


def i64(value) -> int:
    # bool is a subclass of int, and JSON 2.0 is a float: serde's i64 refuses both.
    if isinstance(value, int) and not isinstance(value, bool):
        if I64_MIN <= value <= I64_MAX:
            return value
        raise PayloadError(f"invalid value: integer `{value}`, expected i64")
    raise PayloadError(f"invalid type: {json_type(value)}, expected i64")


def string(value) -> str:
    if isinstance(value, str):
        return value
    raise PayloadError(f"invalid type: {json_type(value)}, expected a string")


def sequence(item):
    def decode_sequence(value) -> list:
        if isinstance(value, list):
            return [item(element) for element in value]
        raise PayloadError(f"invalid type: {json_type(value)}, expected a sequence")
    return decode_sequence


def struct(name: str, *fields):
    """Like a serde-derived struct: a JSON object (extra keys ignored, none missing) or an
    array holding exactly the fields' values in declaration order. Returns a tuple."""
    def decode_struct(value) -> tuple:
        if isinstance(value, dict):
            for field, _ in fields:
                if field not in value:
                    raise PayloadError(f"missing field `{field}`")
            return tuple(decode_field(value[field]) for field, decode_field in fields)
        if isinstance(value, list):
            if len(value) != len(fields):
                raise PayloadError(f"invalid length {len(value)}, expected struct {name} "
                                   f"with {len(fields)} elements")
            return tuple(decode_field(element) for element, (_, decode_field) in zip(value, fields))
        raise PayloadError(f"invalid type: {json_type(value)}, expected struct {name}")
    return decode_struct


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


LINE = struct("Line", ("quantity", i64), ("unit_price_cents", i64))
ORDER_CREATED = struct("OrderCreated", ("customer", string), ("lines", sequence(LINE)))

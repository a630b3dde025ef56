"""Store an order and its `order.created` event in one PostgreSQL transaction.

    python append_order.py DATABASE_URL [--order-id ID] [--customer NAME] [--fail-after-append]

The database must hold eventhost's schema (`eventhost migrate`, or any eventhost command run
once against it). The script creates the application's own table `shop_orders` if it is
missing, then, in ONE transaction, inserts the order's row and appends the event through
`eventhost.append(aggregate_type, aggregate_id, expected_version, events)`. Either both are
stored or neither: `--fail-after-append` raises after the append to show the rollback.

Exit codes: 0 stored, 1 failure (nothing stored), 2 usage error, 3 the order already exists
(its row, or its event stream: SQLSTATE EH409, a version conflict).
"""

import argparse
import sys
import uuid

import psycopg
from psycopg.types.json import Jsonb

CREATE_TABLE = """
    CREATE TABLE IF NOT EXISTS shop_orders (
        order_id    text        PRIMARY KEY,
        customer    text        NOT NULL,
        total_cents bigint      NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    )
"""

INSERT_ORDER = """
    INSERT INTO shop_orders (order_id, customer, total_cents) VALUES (%s, %s, %s)
"""

# expected_version 0: the stream `order/<id>` must not exist yet (NULL would accept any).
APPEND_EVENT = """
    SELECT event_version, event_position, event_id, duplicate
    FROM eventhost.append('order', %s, 0, %s)
"""


class FailedOnPurpose(Exception):
    """Raised by --fail-after-append inside the transaction, which then rolls back."""


def main() -> int:
    args = parse_args()
    order_id = args.order_id or f"o-{uuid.uuid4().hex[:8]}"
    lines = [{"sku": "book", "quantity": 2, "unit_price_cents": 1500}]
    total_cents = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
    events = [
        {
            "event_type": "order.created",
            "payload": {"customer": args.customer, "lines": lines},
            "metadata": {"correlation-id": order_id, "source": "append_order.py"},
        }
    ]
    try:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            if not has_eventhost_schema(conn):
                print("eventhost.append() is missing from this database: run "
                      "`eventhost migrate` against it first", file=sys.stderr)
                return 1
            conn.execute(CREATE_TABLE)
            # One transaction: the row and the event commit together or not at all.
            with conn.transaction():
                conn.execute(INSERT_ORDER, (order_id, args.customer, total_cents))
                row = conn.execute(APPEND_EVENT, (order_id, Jsonb(events))).fetchone()
                if args.fail_after_append:
                    raise FailedOnPurpose("--fail-after-append: failing after the append")
    except FailedOnPurpose as error:
        print(f"{error}; the transaction rolled back: neither the row nor the event "
              f"of order {order_id} was stored", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        return report(error, order_id)
    version, position, event_id, duplicate = row
    print(f"order {order_id}: row inserted into shop_orders and order.created appended "
          f"to stream order/{order_id}, new version {version} "
          f"(position {position}, event id {event_id}, duplicate {str(duplicate).lower()})")
    return 0


def has_eventhost_schema(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regprocedure('eventhost.append(text, text, bigint, jsonb)')"
    ).fetchone()
    return row[0] is not None


def report(error: psycopg.Error, order_id: str) -> int:
    """Explains a database error; the transaction has rolled back."""
    sqlstate = error.sqlstate
    if sqlstate == "EH409":
        # The detail is `expected=<e> actual=<a>`.
        detail = error.diag.message_detail or ""
        print(f"version conflict: stream order/{order_id} already has events ({detail}); "
              f"nothing was stored", file=sys.stderr)
        return 3
    if isinstance(error, psycopg.errors.UniqueViolation):
        print(f"order {order_id} already exists in shop_orders; nothing was stored",
              file=sys.stderr)
        return 3
    print(f"database error (SQLSTATE {sqlstate}): {error}; nothing was stored", file=sys.stderr)
    return 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Insert a shop_orders row and append its order.created event "
        "in one transaction."
    )
    parser.add_argument("database_url", metavar="DATABASE_URL",
                        help="e.g. postgres://app@127.0.0.1:5432/shop")
    parser.add_argument("--order-id", help="the order's id (default: a random o-xxxxxxxx)")
    parser.add_argument("--customer", default="ada", help="the customer's name (default: ada)")
    parser.add_argument("--fail-after-append", action="store_true",
                        help="raise after the append, inside the transaction, so it rolls back")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The daemon on the embedded default (SQLite, no server) with the example plugins (Rust,
# Python, JavaScript): builds them, starts `eventhost run` (its HTTP API on 127.0.0.1:7070),
# appends example orders from the command line and one through HTTP with curl, shows the
# projections' state and the shipping policy's events, then keeps the daemon running until
# Ctrl-C. The first run compiles the Python and JavaScript components (about a minute in a
# debug build); later runs load them from the compile cache in data/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh > /dev/null
cargo build -p eventhost
eventhost="${CARGO_TARGET_DIR:-target}/debug/eventhost"
export DATABASE_URL="sqlite://data/demo.db"
rm -f data/demo.db data/demo.db-wal data/demo.db-shm

"$eventhost" run --plugins dist/plugins &
daemon=$!
trap 'kill -INT "$daemon" 2> /dev/null || true; wait "$daemon" || true' EXIT
until "$eventhost" subscriptions list 2> /dev/null | grep -q shipping-policy; do
    kill -0 "$daemon" || exit 1
    sleep 0.2
done

echo "== appending examples/orders.jsonl"
"$eventhost" append --file examples/orders.jsonl > /dev/null
api=http://127.0.0.1:7070
echo "== appending order o-1004 through the HTTP API ($api)"
curl -sS --fail-with-body -X POST "$api/v1/streams/order/o-1004/events" \
    -H 'content-type: application/json' \
    -d '{"expected_version":"no-stream","events":[{"event_type":"order.created","payload":{"customer":"lin","lines":[{"sku":"mug","quantity":1,"unit_price_cents":900}]}}]}'
echo
sleep 1
echo "== subscriptions"
"$eventhost" subscriptions list
echo "== the order-totals projection's state"
"$eventhost" state order-totals.totals
echo "== the same projection written in Python and in JavaScript: the same state"
"$eventhost" state order-totals-py.totals
"$eventhost" state order-totals-js.totals
echo "== events the shipping policy emitted"
"$eventhost" read category shipment
echo
echo "The daemon keeps running (Ctrl-C stops it). Its status page: $api/"
echo "In another terminal, try:"
echo "  curl -sS '$api/v1/events?limit=5'"
echo "  DATABASE_URL=$DATABASE_URL $eventhost append --aggregate-type order --aggregate-id o-7 \\"
echo "      --event-type order.created --payload '{\"customer\":\"ada\",\"lines\":[]}'"
echo "  DATABASE_URL=$DATABASE_URL $eventhost state order-totals.totals"
wait "$daemon"

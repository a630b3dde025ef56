#!/usr/bin/env bash
# Runs every test of the project: builds the WebAssembly plugins the tests load, then runs
# the whole workspace's tests, and ends with one line totalling every suite. PostgreSQL
# tests use DATABASE_URL (default postgres://root@127.0.0.1:5432/test) and fail when no
# server answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh
# The SQL-driver example (examples/sql) runs in the tools virtualenv the Python build made.
tools="${EVENTHOST_TOOLS:-$HOME/.cache/eventhost-tools}/python"
if ! cmp -s examples/sql/requirements.txt "$tools/.sql-requirements.txt"; then
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r examples/sql/requirements.txt
    cp examples/sql/requirements.txt "$tools/.sql-requirements.txt"
fi
# The API fuzzing test runs schemathesis from the same virtualenv.
if ! cmp -s host/tests/fuzz/requirements.txt "$tools/.fuzz-requirements.txt"; then
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r host/tests/fuzz/requirements.txt
    cp host/tests/fuzz/requirements.txt "$tools/.fuzz-requirements.txt"
fi
# The JavaScript plugin's payload decoder has unit tests of its own.
(cd plugins/javascript/order-totals && npm test --silent)
# So do the helpers plugin authors copy (sdk/javascript: deterministic ids).
node --test sdk/javascript/
# The status page's browser test drives Chromium with playwright-core.
(cd host/tests/browser && npm ci --silent --no-audit --no-fund)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

#!/usr/bin/env bash
# Builds the JavaScript example plugins as WebAssembly components (componentize-js) into
# dist/plugins/: today order-totals, as dist/plugins/order-totals-js.wasm.
# Idempotent: `npm ci` runs only when node_modules is missing or older than package-lock.json,
# and the component is rebuilt only when a source, the WIT or this script is newer than it.
# The component is written to a temporary name in dist/plugins and renamed into place, so a
# daemon watching that folder never loads half a file. Needs node 20+ and npm.
# Usage (from any directory): bash plugins/javascript/build.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/plugins/javascript/order-totals"
out="$root/dist/plugins/order-totals-js.wasm"

if [[ ! -d "$src/node_modules" || "$src/node_modules" -ot "$src/package-lock.json" ]]; then
    (cd "$src" && npm ci --no-audit --no-fund)
    # npm ci leaves node_modules' own timestamp alone when it reuses the folder.
    touch "$src/node_modules"
fi

# The build is not byte-reproducible: rebuilding unchanged sources would hand a watching
# daemon a "new" plugin to compile. Skip when the component is newer than every input.
if [[ -f "$out" && -z "$(find "$src" "$root/wit" "$root/plugins/javascript/build.sh" \
    -path "$src/node_modules" -prune -o -type f -newer "$out" -print -quit)" ]]; then
    echo "$out"
    exit 0
fi

mkdir -p "$(dirname "$out")"
tmp="$(mktemp "$root/dist/plugins/.order-totals-js.XXXXXX.tmp")"
trap 'rm -f "$tmp"' EXIT
node "$src/build.mjs" "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"

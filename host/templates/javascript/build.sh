#!/usr/bin/env bash
# Builds {{name}}.wasm, the plugin's WebAssembly component, from src/plugin.js next to this
# script with componentize-js (installed into node_modules on first use, and again when
# package.json changes). The component is written under a temporary name and renamed into
# place, so a daemon watching the folder never loads half a file.
# Usage: bash build.sh (from any directory; needs node 20+ and npm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -d node_modules || node_modules -ot package.json ]]; then
    npm install --no-audit --no-fund
    # npm leaves node_modules' own timestamp alone when it reuses the folder.
    touch node_modules
fi
tmp="$(mktemp ./.{{name}}.wasm.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
node build.mjs "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" {{name}}.wasm
trap - EXIT
echo "{{name}}.wasm"

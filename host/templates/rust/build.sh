#!/usr/bin/env bash
# Builds {{name}}.wasm, the plugin's WebAssembly component, next to this script. It is written
# under a temporary name and renamed into place, so a daemon watching the folder never loads
# half a file. Usage: bash build.sh (from any directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if command -v rustup > /dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
tmp="$(mktemp ./.{{name}}.wasm.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" {{name}}.wasm
trap - EXIT
echo "{{name}}.wasm"
